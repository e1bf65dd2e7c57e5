{#- Remove everything one environment owns.  Pillar: app, env.
      salt-run state.orch orch.destroy pillar='{"app": "blog", "env": "dev"}'
    One step, so the environment's lock is held from the first server removed
    to the record forgotten: a build started meanwhile is refused.  It finds
    what to remove at the provider and on the master, so a half-built
    environment goes as completely as a whole one, and running this again
    succeeds.
-#}
{%- set app = pillar['app'] %}
{%- set env = pillar['env'] %}

gdl_teardown:
  salt.runner:
    - name: gdl.teardown
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ pillar.get('lock_token') or '' }}'
