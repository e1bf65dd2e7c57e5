{#- Converge one environment after gdl.build made its app servers.
    Pillar: app, env.  Each step reads the provider and the environment's
    record itself (nothing is asked while this file renders), so it can be
    re-run on its own:
      salt-run state.orch orch.build pillar='{"app": "blog", "env": "dev"}'
-#}
{%- set app = pillar['app'] %}
{%- set env = pillar['env'] %}
{#- gdl.build passes its lock's token: the runner steps below run under the build's
    lock. Run on its own, each runner step takes the environment's lock itself. #}
{%- set lock_token = pillar.get('lock_token') or '' %}
{#- Exact-name patterns: env names may contain '-', so a glob could reach another environment. #}
{%- set app_servers = '^app-[0-9]+-' ~ app ~ '-' ~ env ~ '$' %}
{%- set lbs = '^lb-[0-9]+-' ~ app ~ '-' ~ env ~ '$' %}

gdl_vrrp_pair:
  salt.runner:
    - name: gdl.vrrp_pair
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'

gdl_pillar:
  salt.runner:
    - name: gdl.write_pillar
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - require:
      - salt: gdl_vrrp_pair

gdl_sync_modules:
  salt.function:
    - name: saltutil.sync_modules
    - tgt: '{{ app_servers }}|{{ lbs }}'
    - tgt_type: pcre
    # Many minions syncing at once on a busy master answer late: wait for them rather
    # than report "no minions responded" after the default few seconds.
    - timeout: 300
    - require:
      - salt: gdl_pillar

gdl_app_role:
  salt.state:
    - tgt: '{{ app_servers }}'
    - tgt_type: pcre
    - sls: gdl.app
    # A re-run may meet the state run of a build that was cut short (a restarted master,
    # a killed salt-run) still going on a minion: wait for it instead of failing.
    - queue: True
    # Salt asks a minion whether its run is still going only after this many
    # seconds (not its default 5): on a busy machine that question can go
    # unanswered and read as a failed run. A minion that died is found after it.
    - timeout: 120
    - require:
      - salt: gdl_sync_modules

{#- Servers beyond the requested count leave haproxy's rotation on both LBs
    before the lb role rewrites its backend without them: requests in flight
    finish, new ones go elsewhere. #}
gdl_drain_surplus:
  salt.runner:
    - name: gdl.drain_surplus
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - require:
      - salt: gdl_app_role

gdl_lb_role:
  salt.state:
    - tgt: '{{ lbs }}'
    - tgt_type: pcre
    - sls: gdl.lb
    - queue: True
    - timeout: 120
    - require:
      - salt: gdl_drain_surplus

gdl_remove_surplus:
  salt.runner:
    - name: gdl.remove_surplus
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - require:
      - salt: gdl_lb_role

gdl_vip_serves:
  salt.runner:
    - name: gdl.check_vip
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - require:
      - salt: gdl_remove_surplus
