"""The admin as a signed-in user sees it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

OVERVIEW = "/admin/django_jobqueue/jobqueue/"
# Text a page must show escaped, never run: a script, a tag closing the <pre>, a template tag.
HOSTILE = ["<script>alert(1)</script>", "</pre><img src=x onerror=alert(1)>", "{{ 7*7 }}"]


def url(name: str, *args: str) -> str:
    return reverse(f"admin:django_jobqueue_{name}", args=args)


def make_user(django_user_model: Any, username: str, *, staff: bool = True, perms: tuple[str, ...] = ()) -> Any:
    user = django_user_model.objects.create_user(username, password="pw", is_staff=staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="django_jobqueue"))
    return user


def logged_in(user: Any, **options: Any) -> Client:
    client = Client(**options)
    client.force_login(user)
    return client


def body(response: Any) -> str:
    return response.content.decode()
