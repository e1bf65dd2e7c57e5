{%- from tpldir ~ '/map.jinja' import gdl, role, hosts_begin, hosts_end with context %}
# Undo gdl.common: the environment's block of /etc/hosts (and the one line per
# server an older gdl wrote). Packages stay: other software may need them.

gdl-common-hosts-absent:
  file.replace:
    - name: /etc/hosts
    - pattern: {{ ('(?ms)^' ~ (hosts_begin | regex_escape) ~ '$.*?^' ~ (hosts_end | regex_escape) ~ '\n') | json }}
    - repl: ''
    - backup: false
    - ignore_if_missing: true
{%- for server in gdl['servers'] + gdl['lbs'] %}

gdl-common-host-{{ server['name'] }}-absent:
  host.absent:
    - name: {{ server['name'] }}
    - ip: {{ server['address'] }}
{%- endfor %}
