"""gunicorn settings of aio-lite's keystone APIs (api.sh passes it with -c).

post_worker_init runs in a worker once it has loaded keystone, just before it
starts accepting: its pid goes into $AIO_API_READY, which api-ready.sh counts.
"""
import os


def post_worker_init(worker):
    ready = os.environ.get("AIO_API_READY")
    if ready:
        open(os.path.join(ready, str(os.getpid())), "w").close()
