"""No data of ours lives in the database: this unmanaged model exists only so
the admin index lists the job queues and Django creates our two permissions
(the django-rq way). It has no table and is never queried."""

from __future__ import annotations

from django.db import models


class JobQueue(models.Model):
    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_jobs", "Can see the job queues and their jobs in the admin"),
            ("manage_jobs", "Can retry, requeue, delete and purge jobs in the admin"),
        ]
        verbose_name = "queue"
        verbose_name_plural = "queues"

    def __str__(self) -> str:
        return "job queues"
