"""DNSSEC: algorithms, DNSKEY/DS, BIND key files, token-backed signing. Starts no processes."""
