{%- from tpldir ~ '/map.jinja' import gdl, role, hosts_begin, hosts_end with context %}

gdl-common-base-dir:
  file.directory:
    - name: {{ role['base_dir'] }}
    - user: root
    - group: root
    - mode: '0755'

{%- if role['manage_hosts'] %}
{#- Every server of the environment in one block of /etc/hosts: one state
    however many servers there are (one host.present each made a build of N
    servers run N times N states), and a server made again at another address
    leaves no line behind. #}
{%- set lines = [] %}
{%- for server in gdl['servers'] + gdl['lbs'] %}
{%-   do lines.append(server['address'] ~ '\t' ~ server['name']) %}
{%- endfor %}

gdl-common-hosts:
  file.blockreplace:
    - name: /etc/hosts
    - marker_start: {{ hosts_begin | json }}
    - marker_end: {{ hosts_end | json }}
    - content: {{ (lines | join('\n') ~ '\n') | json }}
    - append_if_not_found: true
    - backup: false
{%- endif %}
