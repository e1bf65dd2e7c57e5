# Which roles each server gets, by its name: <role>-<index>-<app>-<env>.
# The gdl orchestration applies the roles itself (gdl.app, gdl.lb); this top
# file makes a plain `salt '*' state.apply` (highstate) do the same.
base:
  'app-*':
    - gdl.common
    - gdl.app
  'lb-*':
    - gdl.common
    - gdl.lb
