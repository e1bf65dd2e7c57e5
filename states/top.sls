# Which role each server gets, by its name: <role>-<index>-<app>-<env>. Each
# role includes gdl.common; the gdl orchestration applies the same roles by
# name, and this top file makes a plain `salt '*' state.apply` (highstate) do
# the same.
base:
  'app-*':
    - gdl.app
  'lb-*':
    - gdl.lb
