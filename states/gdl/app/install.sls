{%- from tpldir ~ '/map.jinja' import gdl, role, app with context %}

gdl-app-packages:
  pkg.installed:
    - pkgs: {{ role['packages'] | json }}
    - refresh: {{ role['refresh'] | json }}

gdl-app-group:
  group.present:
    - name: {{ role['group'] }}
    - gid: {{ role['gid'] }}
    - system: true

gdl-app-user:
  user.present:
    - name: {{ role['user'] }}
    - uid: {{ role['uid'] }}
    - gid: {{ role['gid'] }}
    - home: {{ app['dir'] }}
    - createhome: false
    - shell: /usr/sbin/nologin
    - system: true
    - require:
      - group: gdl-app-group

{#- Code and virtualenvs belong to root: the app can read its release, not change it. #}
gdl-app-releases-dir:
  file.directory:
    - name: {{ app['dir'] }}/releases
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: true

gdl-app-log-dir:
  file.directory:
    - name: {{ app['log_dir'] }}
    - user: {{ role['user'] }}
    - group: {{ role['group'] }}
    - mode: '0750'
    - require:
      - user: gdl-app-user

{#- One archive per release, built on the master (gdl.apps.build_release): the
    app's files and a wheelhouse. Its hash, asked of the master's fileserver,
    names the marker of a finished extraction: a release rebuilt under the same
    version is unpacked again, cleanly (its old virtualenv goes with it). #}
{%- set archive_hash = salt['cp.hash_file'](app['archive']) %}
{%- if not archive_hash %}
{{ raise('release ' ~ app['name'] ~ ' ' ~ app['version'] ~ ' is not on the master (' ~ app['archive'] ~ '): build it with gdl.apps.build_release') }}
{%- endif %}
{%- set archive_file = app['dir'] ~ '/archives/' ~ app['name'] ~ '-' ~ app['version'] ~ '.tar.gz' %}

gdl-app-release-archive:
  file.managed:
    - name: {{ archive_file }}
    - source: {{ app['archive'] }}
    - source_hash: {{ archive_hash['hash_type'] }}={{ archive_hash['hsum'] }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: true
    - require:
      - file: gdl-app-releases-dir

gdl-app-release:
  cmd.run:
    - name: >-
        rm -rf {{ app['release'] }} && mkdir -p {{ app['release'] }} &&
        tar -xzf {{ archive_file }} -C {{ app['release'] }} --no-same-owner &&
        touch {{ app['release'] }}/.gdl-release-{{ archive_hash['hsum'][:16] }}
    - creates: {{ app['release'] }}/.gdl-release-{{ archive_hash['hsum'][:16] }}
    - require:
      - file: gdl-app-release-archive

{#- The virtualenv is complete once its marker exists: a failed install is
    retried on the next run, a finished one costs a stat. #}
gdl-app-virtualenv:
  cmd.run:
    - name: >-
        {{ role['python'] }} -m venv --clear {{ app['release'] }}/venv &&
        {{ app['release'] }}/venv/bin/pip install --quiet --no-index --no-cache-dir
        --disable-pip-version-check --find-links {{ app['release'] }}/wheelhouse
        --requirement {{ app['release'] }}/{{ app['manifest']['requirements'] }} &&
        touch {{ app['release'] }}/venv/.gdl-complete
    - creates: {{ app['release'] }}/venv/.gdl-complete
    - require:
      - pkg: gdl-app-packages
      - cmd: gdl-app-release

gdl-app-current:
  file.symlink:
    - name: {{ app['current'] }}
    - target: {{ app['release'] }}
    - force: true
    - require:
      - cmd: gdl-app-virtualenv
