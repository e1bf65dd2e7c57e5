{%- from tpldir ~ '/map.jinja' import gdl, role with context %}
# Undo gdl.common: the environment's block of /etc/hosts (and the one line per
# server an older gdl wrote). Packages stay: other software may need them.
{%- set env_id = gdl['app'] ~ '-' ~ gdl['env'] %}

gdl-common-hosts-absent:
  file.replace:
    - name: /etc/hosts
    - pattern: {{ ('(?ms)^# gdl ' ~ env_id ~ ': its servers, written by Salt$.*?^# gdl ' ~ env_id ~ ': end\n') | json }}
    - repl: ''
    - backup: false
    - ignore_if_missing: true
{%- for server in gdl['servers'] + gdl['lbs'] %}

gdl-common-host-{{ server['name'] }}-absent:
  host.absent:
    - name: {{ server['name'] }}
    - ip: {{ server['address'] }}
{%- endfor %}
