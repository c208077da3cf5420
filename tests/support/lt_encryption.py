"""libtorrent's encryption settings as command-line options, shared by lt_seed.py and
lt_leech.py: --out-enc-policy, --in-enc-policy and --enc-level set the libtorrent settings of
the same names (pe_forced, pe_rc4, ...); without them libtorrent's defaults apply (enabled both
ways, both levels)."""


def add_options(parser):
    """Adds the three options to an argparse parser."""
    parser.add_argument(
        "--out-enc-policy",
        choices=["forced", "enabled", "disabled"],
        help="libtorrent's out_enc_policy (pe_forced: only the encrypted handshake, no plaintext"
        " retry; pe_enabled: encrypted first, then plaintext; pe_disabled: plaintext only);"
        " default: libtorrent's own (enabled)",
    )
    parser.add_argument(
        "--in-enc-policy",
        choices=["forced", "enabled", "disabled"],
        help="libtorrent's in_enc_policy (pe_forced: refuse plaintext handshakes; pe_enabled:"
        " accept both; pe_disabled: refuse encrypted ones); default: libtorrent's own (enabled)",
    )
    parser.add_argument(
        "--enc-level",
        choices=["rc4", "plaintext", "both"],
        help="libtorrent's allowed_enc_level: what an encrypted handshake may select (pe_rc4,"
        " pe_plaintext: the stream stays plaintext after it, pe_both); default: libtorrent's"
        " own (both)",
    )


def apply(lt, settings, args):
    """Sets the options given in `args` into a libtorrent settings dict."""
    if args.out_enc_policy:
        settings["out_enc_policy"] = getattr(lt.enc_policy, "pe_" + args.out_enc_policy)
    if args.in_enc_policy:
        settings["in_enc_policy"] = getattr(lt.enc_policy, "pe_" + args.in_enc_policy)
    if args.enc_level:
        settings["allowed_enc_level"] = getattr(lt.enc_level, "pe_" + args.enc_level)
