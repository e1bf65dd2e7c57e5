{#- Each environment's pillar is written by the gdl runner (gdl/pillar.py) under
    <state_dir>/pillar, one of the master's pillar_roots:
      gdl/envs/<app>-<env>.sls     for every server of the environment
      gdl/envs/lb/<app>-<env>.sls  the VRRP secret, for its load balancers only
    A minion named <role>-<index>-<app>-<env> gets its own environment's files
    and nothing else: one environment never sees another's secret. App names
    have no '-', so a server name splits into exactly these four parts. -#}
{#- opts['id'] is the id the minion authenticated with; its id grain is only what
    it claims, and must not choose which environment's secret it gets. #}
{%- set parts = opts['id'].split('-', 3) %}
base:
{%- if parts | length == 4 and parts[0] in ('app', 'lb') and parts[1].isdigit() %}
  '{{ opts['id'] }}':
    - ignore_missing: true
    - gdl.envs.{{ parts[2] }}-{{ parts[3] }}
{%-   if parts[0] == 'lb' %}
    - gdl.envs.lb.{{ parts[2] }}-{{ parts[3] }}
{%-   endif %}
{%- else %}
  {}
{%- endif %}
