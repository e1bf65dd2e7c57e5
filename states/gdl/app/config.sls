{%- from tpldir ~ '/map.jinja' import gdl, role, app, gunicorn_args with context %}
{%- set site = '/etc/nginx/sites-available/' ~ app['service'] ~ '.conf' %}

include:
  - .install

{#- nginx -t checks a whole configuration, so a server block alone is checked
    inside a minimal one; file.managed runs this with the new content before
    putting it in place: a bad value never reaches the running nginx. #}
gdl-app-nginx-check:
  file.managed:
    - name: /usr/local/sbin/gdl-nginx-check-site
    - source: salt://{{ tpldir }}/files/nginx-check-site.sh
    - user: root
    - group: root
    - mode: '0755'

gdl-app-nginx-site:
  file.managed:
    - name: {{ site }}
    - source: salt://{{ tpldir }}/files/nginx-site.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: /usr/local/sbin/gdl-nginx-check-site
    - context:
        app: {{ app | json }}
        nginx: {{ role['nginx'] | json }}
        upstream: {{ role['gunicorn']['bind'] | json }}
    - require:
      - pkg: gdl-app-packages
      - file: gdl-app-nginx-check

gdl-app-nginx-site-enabled:
  file.symlink:
    - name: /etc/nginx/sites-enabled/{{ app['service'] }}.conf
    - target: {{ site }}
    - require:
      - file: gdl-app-nginx-site

{#- The distribution's default site would take port 80's default_server. #}
gdl-app-nginx-default-site:
  file.absent:
    - name: /etc/nginx/sites-enabled/default

{%- if app['init'] == 'systemd' %}

gdl-app-gunicorn-unit:
  file.managed:
    - name: /etc/systemd/system/{{ app['service'] }}.service
    - source: salt://{{ tpldir }}/files/gunicorn.service.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - context:
        app: {{ app | json }}
        user: {{ role['user'] | json }}
        group: {{ role['group'] | json }}
        args: {{ gunicorn_args | json }}

gdl-app-systemd-reload:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: gdl-app-gunicorn-unit
{%- else %}

gdl-app-gunicorn-unit:
  file.managed:
    - name: /etc/init.d/{{ app['service'] }}
    - source: salt://{{ tpldir }}/files/gunicorn.init.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0755'
    - context:
        app: {{ app | json }}
        user: {{ role['user'] | json }}
        group: {{ role['group'] | json }}
        args: {{ gunicorn_args | json }}
{%- endif %}
