"""Django support, installed by itself as Celery's Django fix-up is: set
``DJANGO_SETTINGS_MODULE`` before creating the app (``proj/caraway.py``), and the app
gets the fix-up (:mod:`.fixup`: Django set up before tasks import, database connections
handled around each task and across forks, ``autodiscover_tasks()`` over the installed
apps) and :class:`~caraway.contrib.django.task.DjangoTask` as its task base
(``delay_on_commit``). docs/django.md walks through a project.
"""

from __future__ import annotations

from caraway.contrib.django.task import DjangoTask

__all__ = ["DjangoTask"]
