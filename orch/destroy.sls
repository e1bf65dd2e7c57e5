{#- Remove everything one environment owns.  Pillar: app, env.
      salt-run state.orch orch.destroy pillar='{"app": "blog", "env": "dev"}'
    Each step finds what to remove at the provider and on the master, so a
    half-built environment goes as completely as a whole one, and running
    this again succeeds.
-#}
{%- set app = pillar['app'] %}
{%- set env = pillar['env'] %}

gdl_remove_servers:
  salt.runner:
    - name: gdl.remove_all
    - app: {{ app }}
    - environment: {{ env }}

gdl_teardown:
  salt.runner:
    - name: gdl.teardown
    - app: {{ app }}
    - environment: {{ env }}
    - require:
      - salt: gdl_remove_servers
