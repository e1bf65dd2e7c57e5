# gdl.lb: haproxy in front of the environment's app servers, keepalived
# moving the VIP between the pair.
include:
  - .install
  - .config
  - .service
