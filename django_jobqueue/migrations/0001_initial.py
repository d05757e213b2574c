# The unmanaged admin model (no table): only its permissions reach the database.

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="JobQueue",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ],
            options={
                "verbose_name": "queue",
                "verbose_name_plural": "queues",
                "permissions": [
                    ("view_jobs", "Can see the job queues and their jobs in the admin"),
                    ("manage_jobs", "Can retry, requeue, delete and purge jobs in the admin"),
                ],
                "managed": False,
                "default_permissions": (),
            },
        ),
    ]
