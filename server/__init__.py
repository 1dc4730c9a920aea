"""server: the I/O shell of msa — sockets, TLS, threads, files, processes.

It holds no protocol rules: those live in smtp_states, sasl and headers.
"""
