"""Views of the tests' project: an async view that enqueues, as an ASGI
project's would (tests/test_async_enqueue.py drives it with Django's
AsyncClient)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from django_jobqueue import aenqueue


async def signup(request: HttpRequest) -> JsonResponse:
    job_id = await aenqueue("add", {"a": 1, "b": int(request.GET.get("b", "2"))})
    return JsonResponse({"job": job_id})
