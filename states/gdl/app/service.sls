{%- from tpldir ~ '/map.jinja' import gdl, role, app with context %}
{%- import 'gdl/common/service.jinja' as service with context %}
{#- gunicorn restarts when the release, its virtualenv or its service
    definition changes; nginx reloads (never restarts) on a site change. #}

include:
  - .install
  - .config

{%- set gunicorn_watch = [
      {'file': 'gdl-app-current'},
      {'file': 'gdl-app-virtualenv'},
      {'file': 'gdl-app-gunicorn-unit'},
    ] %}
{%- if app['init'] == 'systemd' %}
{%-   do gunicorn_watch.append({'module': 'gdl-app-systemd-reload'}) %}
{%- endif %}
{{ service.running('gdl-app-gunicorn-running', app['service'], app['init'], gunicorn_watch,
                   require=[{'file': 'gdl-app-log-dir'}]) }}

{{ service.running('gdl-app-nginx-running', 'nginx', app['init'], [
      {'file': 'gdl-app-nginx-site'},
      {'file': 'gdl-app-nginx-site-enabled'},
      {'file': 'gdl-app-nginx-default-site'},
    ], action='reload') }}
