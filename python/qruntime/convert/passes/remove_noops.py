"""Pass: drop dropout and identity nodes (no-ops in eval mode), rewiring their consumers to their input."""
import copy


_NOOPS = ("dropout", "identity")


def remove_noops(graph):
    """A new graph without dropout/identity nodes; a graph output that was a noop's output becomes the
    noop's (first non-noop) input, which may be a graph input."""
    source = {}  # noop output -> the value it passes through
    for node in graph.nodes:
        if node.op in _NOOPS:
            source[node.output] = source.get(node.inputs[0], node.inputs[0])
    nodes = []
    for node in graph.nodes:
        if node.op in _NOOPS:
            continue
        if any(v in source for v in node.inputs):
            node = copy.deepcopy(node)
            node.inputs = [source.get(v, v) for v in node.inputs]
        nodes.append(node)
    return graph.with_nodes(nodes, outputs=[source.get(v, v) for v in graph.outputs])
