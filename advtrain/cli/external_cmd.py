"""``advtrain external CARD --attack NAME --acc PERCENT --source URL``: record an external or
adaptive evaluation on an existing attack (Linf/L2/L1) card, without re-running AutoAttack.

The card gets RobustBench's ``external`` field (the lower of AutoAttack's and the external
accuracy) and a footnote naming the attack and its source; its advtrain sidecar, when there is
one, records the three values. Both files are written as one. (``advtrain eval --external-attack
... --external-acc ... --external-source ...`` records the same while evaluating.)
"""
from __future__ import annotations



def add_parser(subparsers) -> None:
    p = subparsers.add_parser("external", help="record an external/adaptive evaluation on a card",
                              description=__doc__.splitlines()[0])
    p.add_argument("card", help="the card (<name>.json) advtrain eval wrote, or a published one")
    p.add_argument("--attack", required=True, metavar="NAME",
                   help="the external attack, e.g. 'APGD + BPDA'")
    p.add_argument("--acc", required=True, metavar="PERCENT",
                   help="its robust accuracy, a percentage (e.g. 73.10)")
    p.add_argument("--source", required=True, metavar="URL",
                   help="where the number is published (URL or citation)")
    p.set_defaults(func=run)


def run(args) -> int:
    from advtrain.eval.cards import ExternalEval, add_external
    from advtrain.io.paths import check_path

    check_path(args.card, "CARD")
    external = ExternalEval(attack=args.attack, accuracy=args.acc, source=args.source)
    card, side = add_external(args.card, external,
                              command=getattr(args, "argv", None))
    print(f"card: {card}" + (f"\nsidecar: {side}" if side else " (no advtrain sidecar)"))
    return 0
