{%- from tpldir ~ '/map.jinja' import gdl, role with context %}
# Undo gdl.common: the environment's host entries. Packages stay: other
# software may need them.
{%- for server in gdl['servers'] + gdl['lbs'] %}

gdl-common-host-{{ server['name'] }}-absent:
  host.absent:
    - name: {{ server['name'] }}
    - ip: {{ server['address'] }}
{%- endfor %}
