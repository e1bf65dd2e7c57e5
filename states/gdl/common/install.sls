{%- from tpldir ~ '/map.jinja' import gdl, role with context %}

gdl-common-packages:
  pkg.installed:
    - pkgs: {{ role['packages'] | json }}
    - refresh: {{ role['refresh'] | json }}
