import re

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import include, path, re_path

urlpatterns = [
    # The admin's CSS and scripts with DEBUG off too (off by default): the demo
    # runs under runserver on 127.0.0.1, with no web server in front of it to
    # serve them. Never in a deployment: there, collectstatic and a web server.
    re_path(rf"^{re.escape(settings.STATIC_URL.lstrip('/'))}(?P<path>.*)$", serve, {"insecure": True}),
    path("admin/", admin.site.urls),
    path("", include("demo.urls")),
]
