"""The protocol core: what an SMTP or POP3 server decides, as pure functions over data.

No I/O, no Twisted, no Textual. The Twisted sessions (`mockservers`) feed it lines and carry out
the effects it returns (start TLS, lock a maildrop, remove messages); the validator
(`simulator.engine`) runs the very same decisions on a shadow state to predict the server's reply,
text included. A persona (`mockservers.profile.Profile`) is read, never changed.

Modules: `decision` (replies, effects, the decision record), `sasl` (one AUTH exchange step by
step), `codec` (base64, AUTH PLAIN, CRAM-MD5, APOP, xtext), `credentials` (who may log in with
what), `addresses` and `parameters` (MAIL/RCPT grammar), `persona_rules` (persona policies),
`faults` (instructors' fault scripts), `smtp` and `pop3` (verb tables, states, decisions).
It imports nothing from `mockservers` or `simulator` (tests/test_import_graph.py).
"""
