{%- from tpldir ~ '/map.jinja' import gdl, role, lb with context %}
{%- import 'gdl/common/service.jinja' as service with context %}
{%- set keepalived_status = 'start-stop-daemon --status --pidfile /run/keepalived.pid --exec /usr/sbin/keepalived' %}
{#- A config change reloads the daemon; haproxy comes first: keepalived's
    check gives the VIP up when haproxy is not running. #}

include:
  - .install
  - .config

{{ service.running('gdl-lb-haproxy-running', 'haproxy', lb['init'],
                   [{'file': 'gdl-lb-haproxy-config'}, {'file': 'gdl-lb-tls-pem'}],
                   action='reload') }}

{{ service.running('gdl-lb-keepalived-running', 'keepalived', lb['init'],
                   [{'file': 'gdl-lb-keepalived-config'}], action='reload',
                   require=[{service.requisite_module(lb['init']): 'gdl-lb-haproxy-running'}],
                   status=keepalived_status) }}
