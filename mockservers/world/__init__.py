"""A lab internet: several mail domains on loopback with their own DNS, relays and bounces.

`worldfile` reads and lints a world TOML file; `dns` serves the world's zones with twisted.names;
`relay` moves queued mail between domains over real SMTP; `dsn` writes bounces (RFC 3464);
`senderauth` checks SPF, DKIM and DMARC; `servers` starts everything of one world.
"""
