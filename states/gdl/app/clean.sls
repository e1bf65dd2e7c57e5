{%- from tpldir ~ '/map.jinja' import gdl, role, app with context %}
{%- import 'gdl/common/service.jinja' as service with context %}
# Undo gdl.app: stop the app, remove its site, service and releases. nginx
# keeps running (its other sites, if any, stay up); packages and the user stay.

{{ service.dead('gdl-app-gunicorn-dead', app['service'], app['init']) }}

gdl-app-clean-files:
  file.absent:
    - names:
      - /etc/nginx/sites-enabled/{{ app['service'] }}.conf
      - /etc/nginx/sites-available/{{ app['service'] }}.conf
{%- if app['init'] == 'systemd' %}
      - /etc/systemd/system/{{ app['service'] }}.service
{%- else %}
      - /etc/init.d/{{ app['service'] }}
{%- endif %}
      - {{ app['dir'] }}
      - {{ app['log_dir'] }}
    - require:
      - {{ service.requisite_module(app['init']) }}: gdl-app-gunicorn-dead

gdl-app-clean-nginx-reload:
  cmd.run:
    - name: service nginx reload
    - onlyif: service nginx status
    - onchanges:
      - file: gdl-app-clean-files
