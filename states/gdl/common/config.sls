{%- from tpldir ~ '/map.jinja' import gdl, role with context %}

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
{%- set env_id = gdl['app'] ~ '-' ~ gdl['env'] %}
{%- set lines = [] %}
{%- for server in gdl['servers'] + gdl['lbs'] %}
{%-   do lines.append(server['address'] ~ '\t' ~ server['name']) %}
{%- endfor %}

gdl-common-hosts:
  file.blockreplace:
    - name: /etc/hosts
    - marker_start: '# gdl {{ env_id }}: its servers, written by Salt'
    - marker_end: '# gdl {{ env_id }}: end'
    - content: {{ (lines | join('\n') ~ '\n') | json }}
    - append_if_not_found: true
    - backup: false
{%- endif %}
