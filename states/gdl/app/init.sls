# gdl.app: the app release under gunicorn, behind nginx, on a server that has
# what every server of the environment has (gdl.common).
include:
  - gdl.common
  - .install
  - .config
  - .service
