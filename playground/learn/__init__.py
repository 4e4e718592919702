"""The Learn tab's content (chapters, their try-this tasks and the checks of those tasks on real runs) and the code
that reproduces any run outside the playground (`snippet`)."""
