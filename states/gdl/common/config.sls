{%- from tpldir ~ '/map.jinja' import gdl, role with context %}

gdl-common-base-dir:
  file.directory:
    - name: {{ role['base_dir'] }}
    - user: root
    - group: root
    - mode: '0755'

{%- if role['manage_hosts'] %}
{%- for server in gdl['servers'] + gdl['lbs'] %}

gdl-common-host-{{ server['name'] }}:
  host.present:
    - name: {{ server['name'] }}
    - ip: {{ server['address'] }}
{%- endfor %}
{%- endif %}
