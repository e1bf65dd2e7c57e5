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

{#- One archive per release, built on the master (gdl.release_build.build_release):
    the app's files and its requirements installed, checked against the hash in
    the .sha256 file beside it (the runner puts it in pillar). It is unpacked
    into a directory of its own, so the running release is never touched. A
    marker named after the hash says the unpacking finished (creates: no shell
    looks): a re-run (test=True too) costs a stat, and a release rebuilt under
    the same version is unpacked again into a clean directory, its old
    virtualenv gone with it. #}
{%- set extracted = app['release'] ~ '/.gdl-release-' ~ app['archive_sha256'][:16] %}

{#- A release that does not fit is refused before any of it is written: a disk
    filled by the unpacking leaves the minion unable even to return its job.
    The space is read on the deepest existing directory the release goes under. #}
{%- set short = namespace(free=none, path='/') %}
{%- if app['room'] and not salt['file.file_exists'](extracted) %}
{%-   for candidate in [app['dir'] ~ '/releases', app['dir'], role['base_dir'], '/'] %}
{%-     if short.free is none and salt['file.directory_exists'](candidate) %}
{%-       set short.path = candidate %}
{%-       set short.free = salt['status.diskusage'](candidate)[candidate]['available'] %}
{%-     endif %}
{%-   endfor %}
{%- endif %}
{%- if short.free is not none and short.free < app['room'] %}

gdl-app-release-room:
  test.fail_without_changes:
    - name: {{ short.path }}
    - comment: >-
        {{ short.path }} has {{ (short.free / 1048576) | round(1) }} MiB free and release
        {{ app['version'] }} needs about {{ (app['room'] / 1048576) | round(1) }} MiB:
        free space on this server, then run this again
{%- endif %}

gdl-app-release:
  archive.extracted:
    - name: {{ app['release'] }}
    - source: {{ app['archive'] }}
    - source_hash: sha256={{ app['archive_sha256'] }}
    - archive_format: tar
    - enforce_toplevel: false
    - overwrite: true
    - clean_parent: true
    - trim_output: 10
    - creates: {{ extracted | json }}
    - require:
      - file: gdl-app-releases-dir
{%- if short.free is not none and short.free < app['room'] %}
      - test: gdl-app-release-room
{%- endif %}

gdl-app-release-extracted:
  file.managed:
    - name: {{ extracted }}
    - contents: ''
    - replace: false
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - archive: gdl-app-release

{#- The release's virtualenv, made without a shell: each step is a command line
    of its own (cmd.run_all with python_shell false), so no value of the
    release reaches a shell. The master read the archive's layout (pillar
    layout): site-packages/ holds the requirements it installed from its
    wheels, with the master's Python's bytecode, copied into a venv without
    pip; compileall then finds that bytecode current on a server of the same
    Python (the sources keep the archive's time, 0) and compiles for this
    server's Python otherwise, in one process: the other cores are busy
    setting up the other servers. An archive of an older gdl carries wheels
    instead (wheelhouse/), which pip installs, and that needs python3-venv on
    the server. The venv is complete once its marker exists: until then every
    step runs again (--clear starts it afresh), and a finished one costs a
    stat per step. #}
{%- set venv = app['release'] ~ '/venv' %}
{%- set venv_complete = venv ~ '/.gdl-complete' %}
{%- if app['layout'] == 'wheelhouse' %}
{%-   set make_venv = [role['python'], '-m', 'venv', '--clear', venv] %}
{%-   set install = [
        venv ~ '/bin/pip', 'install', '--quiet', '--no-index', '--no-cache-dir',
        '--disable-pip-version-check',
        '--find-links', app['release'] ~ '/wheelhouse',
        '--requirement', app['release'] ~ '/' ~ app['manifest']['requirements'],
      ] %}
{%- else %}
{%-   set make_venv = [role['python'], '-m', 'venv', '--clear', '--without-pip', venv] %}
{%-   set install = [
        venv ~ '/bin/python', '-c',
        'import compileall, shutil, sys, sysconfig; '
        ~ 'site = sysconfig.get_path("purelib"); '
        ~ 'shutil.copytree(sys.argv[1], site, dirs_exist_ok=True); '
        ~ 'sys.exit(not compileall.compile_dir(site, quiet=1, workers=1))',
        app['release'] ~ '/site-packages',
      ] %}
{%- endif %}
gdl-app-virtualenv-made:
  module.run:
    - cmd.run_all:
      - cmd: {{ make_venv | json }}
      - python_shell: false
    - creates: {{ venv_complete | json }}
    - require:
      - pkg: gdl-app-packages
      - file: gdl-app-release-extracted

gdl-app-virtualenv-installed:
  module.run:
    - cmd.run_all:
      - cmd: {{ install | json }}
      - python_shell: false
    - creates: {{ venv_complete | json }}
    - require:
      - module: gdl-app-virtualenv-made

gdl-app-virtualenv:
  file.managed:
    - name: {{ venv_complete | json }}
    - contents: ''
    - replace: false
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - module: gdl-app-virtualenv-installed

{#- What pip would have written for gunicorn's console script: the service runs
    it, and `ps -C gunicorn` finds it by that name. #}
gdl-app-gunicorn-script:
  file.managed:
    - name: {{ venv }}/bin/gunicorn
    - contents: |
        #!{{ venv }}/bin/python
        import sys
        from gunicorn.app.wsgiapp import run
        sys.exit(run())
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: gdl-app-virtualenv

gdl-app-current:
  file.symlink:
    - name: {{ app['current'] }}
    - target: {{ app['release'] }}
    - force: true
    - require:
      - file: gdl-app-virtualenv
      - file: gdl-app-gunicorn-script
