# Celery's Django layout: the app loads with Django, so @shared_task uses it
from .caraway import app as caraway_app

__all__ = ("caraway_app",)
