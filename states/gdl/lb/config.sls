{%- from tpldir ~ '/map.jinja' import gdl, role, lb with context %}
{#- Each file is checked by its daemon before it replaces the running one's:
    a bad pillar value fails this state and leaves the service as it was. #}

include:
  - .install
  - .vrrp_filter

gdl-lb-haproxy-config:
  file.managed:
    - name: /etc/haproxy/haproxy.cfg
    - source: salt://{{ tpldir }}/files/haproxy.cfg.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0644'
    - check_cmd: /usr/sbin/haproxy -c -q -f
    - context:
        gdl:
          app: {{ gdl['app'] | json }}
          env: {{ gdl['env'] | json }}
          servers: {{ gdl['servers'] | json }}
        haproxy: {{ role['haproxy'] | json }}
        lb: {{ lb | json }}
        tls: {{ {'enabled': gdl['tls']['enabled'], 'http': gdl['tls']['http']} | json }}
    - require:
      - pkg: gdl-lb-packages

{#- The HTTPS certificate's key is in this file (docs/https.md): root only (haproxy
    reads it before it drops to its user), and never in the state's output. #}
{%- if gdl['tls']['enabled'] %}
{%-   if not gdl['tls']['pem'] %}
{{ raise('pillar gdl:tls:enabled is true but gdl:tls:pem is empty: run salt-run gdl.build again') }}
{%-   endif %}
gdl-lb-tls-pem:
  file.managed:
    - name: {{ role['haproxy']['tls_pem'] }}
    - contents_pillar: gdl:tls:pem
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: false
    - require:
      - pkg: gdl-lb-packages
    # haproxy -c checks the new haproxy.cfg with the certificate it names.
    - require_in:
      - file: gdl-lb-haproxy-config
{%- else %}
gdl-lb-tls-pem:
  file.absent:
    - name: {{ role['haproxy']['tls_pem'] }}
    - require:
      - file: gdl-lb-haproxy-config
{%- endif %}

{#- keepalived's scripts: root only (its script security refuses others). #}
gdl-lb-keepalived-check-haproxy:
  file.managed:
    - name: /etc/keepalived/gdl-check-haproxy
    - source: salt://{{ tpldir }}/files/gdl-check-haproxy
    - user: root
    - group: root
    - mode: '0700'
    - require:
      - pkg: gdl-lb-packages

gdl-lb-keepalived-vip-master:
  file.managed:
    - name: /etc/keepalived/gdl-vip-master
    - source: salt://{{ tpldir }}/files/gdl-vip-master.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0700'
    - context:
        gdl:
          app: {{ gdl['app'] | json }}
          env: {{ gdl['env'] | json }}
          vip: {{ gdl['vip'] | json }}
        lb: {{ lb | json }}
        tag: {{ ('gdl/vip/' ~ gdl['app'] ~ '-' ~ gdl['env'] ~ '/master') | json }}
    - require:
      - pkg: gdl-lb-packages

{#- The VRRP secret is in this file: root only, and never in the state's output.
    The template reads it from pillar itself: the state's context (which
    state.show_sls and the job cache show) carries only what else it reads. #}
{%- set vrrp_shown = {} %}
{%- for key, value in gdl['vrrp'].items() if key != 'secret' %}
{%-   do vrrp_shown.update({key: value}) %}
{%- endfor %}
{%- set gdl_shown = {'app': gdl['app'], 'env': gdl['env'], 'lbs': gdl['lbs'],
                     'vip': gdl['vip'], 'vrrp': vrrp_shown} %}
gdl-lb-keepalived-config:
  file.managed:
    - name: /etc/keepalived/keepalived.conf
    - source: salt://{{ tpldir }}/files/keepalived.conf.jinja
    - template: jinja
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: false
    - check_cmd: /usr/sbin/keepalived --config-test -f
    - context:
        gdl: {{ gdl_shown | json }}
        keepalived: {{ role['keepalived'] | json }}
        lb: {{ lb | json }}
    - require:
      - pkg: gdl-lb-packages
      - file: gdl-lb-keepalived-check-haproxy
      - file: gdl-lb-keepalived-vip-master
      # keepalived hears its peer only once VRRP from elsewhere is dropped.
      - cmd: gdl-lb-vrrp-filter
