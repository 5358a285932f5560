"""Pass: drop the nodes whose outputs reach no graph output."""


def dead_code(graph):
    """A new graph holding only the nodes some graph output depends on, in their original order."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if node.output in live:
            kept.append(node)
            live.update(node.inputs)
    return graph.with_nodes(kept[::-1])
