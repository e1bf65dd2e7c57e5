# gdl.common: what every server of an environment has, whatever its role.
include:
  - .install
  - .config
