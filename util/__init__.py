"""What every I/O room shares (DESIGN.md "Layout"), as Postfix's src/util:
bounded reads of configured files (`files`), waiting on a socket or pipe
with a deadline (`wait`), the log-line writer (`maillog`). Below server/,
delivery/, directory/ and state/; imports the standard library only.
"""
