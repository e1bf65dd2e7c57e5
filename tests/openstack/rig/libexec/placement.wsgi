# WSGI entry of the Placement API for uwsgi.
from placement.wsgi import init_application

application = init_application()
