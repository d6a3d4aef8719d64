import os

from caraway import Caraway

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Caraway("proj")
# CARAWAY_* settings; PROJ_NAMESPACE=CELERY reads a Celery project's CELERY_* ones instead
namespace = os.environ.get("PROJ_NAMESPACE", "CARAWAY")
app.config_from_object("django.conf:settings", namespace=namespace)
app.autodiscover_tasks()
