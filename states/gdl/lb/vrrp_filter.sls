{%- from tpldir ~ '/map.jinja' import lb with context %}
{#- keepalived's VRRPv3 (the fast profile) has no authentication: the kernel
    drops VRRP (IP protocol 112) from every address but the peer's before
    keepalived sees it, in both profiles.  The chain is replaced whole, in one
    iptables-restore, and only when it differs from what it should be. #}
{%- set chain = 'gdl-vrrp' %}
{%- set wanted = ['-N ' ~ chain] %}
{%- for peer in lb['peers'] %}
{%-   do wanted.append('-A ' ~ chain ~ ' -s ' ~ peer['address'] ~ '/32 -j RETURN') %}
{%- endfor %}
{%- do wanted.append('-A ' ~ chain ~ ' -j DROP') %}
{%- set restore = ['*filter', ':' ~ chain ~ ' - [0:0]'] + wanted[1:] + ['COMMIT', ''] %}

include:
  - .install

gdl-lb-vrrp-filter:
  cmd.run:
    - name: >-
        iptables-restore -w --noflush &&
        { iptables -w -C INPUT -p 112 -j {{ chain }} 2>/dev/null ||
        iptables -w -I INPUT 1 -p 112 -j {{ chain }}; }
    - stdin: {{ restore | join('\n') | json }}
    - unless: >-
        test "$(iptables -w -S {{ chain }} 2>/dev/null | paste -sd ' ')" = {{ wanted | join(' ') | json }} &&
        iptables -w -C INPUT -p 112 -j {{ chain }}
    - require:
      - pkg: gdl-lb-packages
