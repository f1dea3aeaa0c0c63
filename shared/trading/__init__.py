"""The trading rules, written once: actions, sides and the tables of what each action does
(``rules``), the arithmetic of open positions (``book``) and the two rewards (``rewards``), all over
arrays. The vectorised environment calls them with a row per session, the live position with one
row; the search kernels receive the tables as parameters; the broker gateway reads them through the
live position."""
