# gdl.app: the app release under gunicorn, behind nginx.
include:
  - .install
  - .config
  - .service
