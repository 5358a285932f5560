"""Pass: drop the nodes whose outputs reach no graph output."""
from .. import ir


def dead_code(graph):
    """A new graph holding only the nodes some graph output depends on, in their original order."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if node.output in live:
            kept.append(node)
            live.update(node.inputs)
    return ir.Graph(inputs=list(graph.inputs), outputs=list(graph.outputs), nodes=kept[::-1],
                    shapes=dict(graph.shapes), output_keys=graph.output_keys)
