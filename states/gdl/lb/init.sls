# gdl.lb: haproxy in front of the environment's app servers, keepalived
# moving the VIP between the pair, on a server that has what every server of
# the environment has (gdl.common).
include:
  - gdl.common
  - .install
  - .vrrp_filter
  - .config
  - .service
