{%- from tpldir ~ '/map.jinja' import gdl, role, lb with context %}
{%- import 'gdl/common/service.jinja' as service with context %}
{%- set keepalived_status = 'start-stop-daemon --status --pidfile /run/keepalived.pid --exec /usr/sbin/keepalived' %}
# Undo gdl.lb: stop keepalived first (the VIP leaves this LB at once), then
# haproxy, and remove keepalived's configuration (it holds the secret),
# haproxy's certificate and key, and the VRRP filter.
# Packages stay.

{{ service.dead('gdl-lb-keepalived-dead', 'keepalived', lb['init'], status=keepalived_status) }}

{{ service.dead('gdl-lb-haproxy-dead', 'haproxy', lb['init'],
                require=[{service.requisite_module(lb['init']): 'gdl-lb-keepalived-dead'}]) }}

gdl-lb-clean-files:
  file.absent:
    - name: /etc/keepalived/keepalived.conf
    - require:
      - {{ service.requisite_module(lb['init']) }}: gdl-lb-keepalived-dead

gdl-lb-clean-tls:
  file.absent:
    - name: {{ role['haproxy']['tls_pem'] }}
    - require:
      - {{ service.requisite_module(lb['init']) }}: gdl-lb-haproxy-dead
{%- for script in ('gdl-check-haproxy', 'gdl-vip-master') %}

gdl-lb-clean-{{ script }}:
  file.absent:
    - name: /etc/keepalived/{{ script }}
    - require:
      - {{ service.requisite_module(lb['init']) }}: gdl-lb-keepalived-dead
{%- endfor %}

gdl-lb-clean-vrrp-filter:
  cmd.run:
    - name: >-
        while iptables -w -D INPUT -p 112 -j gdl-vrrp 2>/dev/null; do :; done;
        iptables -w -F gdl-vrrp && iptables -w -X gdl-vrrp
    - onlyif: iptables -w -S gdl-vrrp
    - require:
      - {{ service.requisite_module(lb['init']) }}: gdl-lb-keepalived-dead
