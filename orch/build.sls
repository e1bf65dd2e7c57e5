{#- Converge one environment after gdl.build started its app servers.
    Pillar: app, env.  Each step reads the provider and the environment's
    record itself (nothing is asked while this file renders), so it can be
    re-run on its own:
      salt-run state.orch orch.build pillar='{"app": "blog", "env": "dev"}'

    Every step runs in a process of its own (parallel: True) as soon as the
    steps it requires are done: the VRRP pair is made while the app servers
    boot, each role's steps wait for that role's minions only, and the order
    that matters is in the requisites.
-#}
{%- set app = pillar['app'] %}
{%- set env = pillar['env'] %}
{#- gdl.build passes its lock's token: the runner steps below run under the build's
    lock. Run on its own, each runner step takes the environment's lock itself. #}
{%- set lock_token = pillar.get('lock_token') or '' %}
{#- Exact-name patterns: env names may contain '-', so a glob could reach another environment. #}
{%- set app_servers = '^app-[0-9]+-' ~ app ~ '-' ~ env ~ '$' %}
{%- set lbs = '^lb-[0-9]+-' ~ app ~ '-' ~ env ~ '$' %}
{#- gdl.write_pillar leaves a due-<run>.json here for each role run due (gdl/applied.py);
    a run that succeeded becomes role-<role>.json, what the next build compares with.
    due-surplus.json names the app servers beyond the requested count, while there are. #}
{%- set applied = (opts.get('gdl') or {}).get('state_dir', '/var/lib/gdl') ~ '/envs/' ~ app ~ '-' ~ env ~ '.applied' %}

gdl_vrrp_pair:
  salt.runner:
    - name: gdl.vrrp_pair
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - parallel: True

{#- Needs no pillar: waits for the app servers' minions while the pair is made. #}
gdl_app_minions:
  salt.runner:
    - name: gdl.minions_ready
    - app: {{ app }}
    - environment: {{ env }}
    - role: app
    - lock_token: '{{ lock_token }}'
    - parallel: True

gdl_pillar:
  salt.runner:
    - name: gdl.write_pillar
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - parallel: True
    - require:
      - salt: gdl_vrrp_pair

gdl_lb_minions:
  salt.runner:
    - name: gdl.minions_ready
    - app: {{ app }}
    - environment: {{ env }}
    - role: lb
    - lock_token: '{{ lock_token }}'
    - parallel: True
    - require:
      - salt: gdl_vrrp_pair

{#- gdl's modules reach the load balancers beside their role, which uses none of
    them: the runner's calls on the pair (drain, VIP check) come after. #}
gdl_lb_modules:
  salt.runner:
    - name: gdl.lb_modules
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - parallel: True
    - require:
      - salt: gdl_lb_minions

{#- The LB role beside the app role: only in a pair through which nothing is served
    yet (gdl.write_pillar decides), as its backend may name app servers still being
    set up. Otherwise the LB role runs after the app role and the drain below. #}
gdl_lb_role_first:
  salt.state:
    - tgt: '{{ lbs }}'
    - tgt_type: pcre
    - sls: gdl.lb
    - queue: True
    - timeout: 120
    - parallel: True
    - onlyif:
      - fun: file.file_exists
        path: {{ applied }}/due-lb-first.json
    - require:
      - salt: gdl_pillar
      - salt: gdl_lb_minions

gdl_lb_role_first_applied:
  file.rename:
    - name: {{ applied }}/role-lb.json
    - source: {{ applied }}/due-lb-first.json
    - force: True
    - parallel: True
    - onlyif:
      - fun: file.file_exists
        path: {{ applied }}/due-lb-first.json
    - require:
      - salt: gdl_lb_role_first

{#- The app role on every app server at once: only while nothing is served
    through the pair (gdl.write_pillar decides). In an environment that serves,
    gdl_app_role_rolling below runs it instead, one server at a time. #}
gdl_app_role:
  salt.state:
    - tgt: '{{ app_servers }}'
    - tgt_type: pcre
    - sls: gdl.app
    # A re-run may meet the state run of a build that was cut short (a restarted master,
    # a killed salt-run) still going on a minion: wait for it instead of failing.
    # Salt asks a minion whether its run is still going only after `timeout`
    # seconds (not its default 5): on a busy machine that question can go
    # unanswered and read as a failed run. A minion that died is found after it.
    - queue: True
    - timeout: 120
    - parallel: True
    - onlyif:
      - fun: file.file_exists
        path: {{ applied }}/due-app.json
    - require:
      - salt: gdl_pillar
      - salt: gdl_app_minions

gdl_app_role_applied:
  file.rename:
    - name: {{ applied }}/role-app.json
    - source: {{ applied }}/due-app.json
    - force: True
    - parallel: True
    - onlyif:
      - fun: file.file_exists
        path: {{ applied }}/due-app.json
    - require:
      - salt: gdl_app_role

{#- Each app server in turn: drained on both LBs, the app role, back in rotation
    and UP before the next, so a restarting gunicorn is never sent a request. #}
gdl_app_role_rolling:
  salt.runner:
    - name: gdl.roll_app_role
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - parallel: True
    - onlyif:
      - fun: file.file_exists
        path: {{ applied }}/due-app-rolling.json
    - require:
      - salt: gdl_pillar
      - salt: gdl_app_minions
      - salt: gdl_lb_minions
      - salt: gdl_lb_modules

gdl_app_role_rolling_applied:
  file.rename:
    - name: {{ applied }}/role-app.json
    - source: {{ applied }}/due-app-rolling.json
    - force: True
    - parallel: True
    - onlyif:
      - fun: file.file_exists
        path: {{ applied }}/due-app-rolling.json
    - require:
      - salt: gdl_app_role_rolling

{#- Servers beyond the requested count leave haproxy's rotation on both LBs
    before the lb role rewrites its backend without them: requests in flight
    finish, new ones go elsewhere. #}
gdl_drain_surplus:
  salt.runner:
    - name: gdl.drain_surplus
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - parallel: True
    - onlyif:
      - fun: file.file_exists
        path: {{ applied }}/due-surplus.json
    - require:
      - salt: gdl_app_role
      - file: gdl_app_role_applied
      - salt: gdl_app_role_rolling
      - file: gdl_app_role_rolling_applied
      - file: gdl_lb_role_first_applied
      - salt: gdl_lb_modules

gdl_lb_role:
  salt.state:
    - tgt: '{{ lbs }}'
    - tgt_type: pcre
    - sls: gdl.lb
    - queue: True
    - timeout: 120
    - parallel: True
    - onlyif:
      - fun: file.file_exists
        path: {{ applied }}/due-lb.json
    - require:
      - salt: gdl_drain_surplus

gdl_lb_role_applied:
  file.rename:
    - name: {{ applied }}/role-lb.json
    - source: {{ applied }}/due-lb.json
    - force: True
    - parallel: True
    - onlyif:
      - fun: file.file_exists
        path: {{ applied }}/due-lb.json
    - require:
      - salt: gdl_lb_role

gdl_remove_surplus:
  salt.runner:
    - name: gdl.remove_surplus
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - parallel: True
    - onlyif:
      - fun: file.file_exists
        path: {{ applied }}/due-surplus.json
    - require:
      - salt: gdl_lb_role
      - file: gdl_lb_role_applied

gdl_vip_serves:
  salt.runner:
    - name: gdl.check_vip
    - app: {{ app }}
    - environment: {{ env }}
    - lock_token: '{{ lock_token }}'
    - parallel: True
    - require:
      - salt: gdl_remove_surplus
