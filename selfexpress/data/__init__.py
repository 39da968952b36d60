from .synthetic import make_union_of_subspaces
