"""BIND: building the patched 9.18, rendering its configuration, running named and rndc."""
