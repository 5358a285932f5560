"""Pass: fuse a ReLU/ReLU6 into the conv2d, linear or add that produces its input (the `act` attribute)."""
import collections
import copy


# Which producers can absorb each activation: the int8 kernels clamp in their requantization epilogue.
_ABSORBERS = {"relu": ("conv2d", "linear", "add", "sub"), "relu6": ("conv2d", "linear")}


def _activation(node):
    """The act value `node` would fuse as, or None."""
    if node.op in _ABSORBERS:
        return node.op
    if node.op == "hardtanh" and (node.attrs.get("min_val"), node.attrs.get("max_val")) == (0.0, 6.0):
        return "relu6"
    return None


def fuse_activations(graph):
    """A new graph where each relu (after conv2d/linear/add) and relu6 or hardtanh(0, 6) (after conv2d/linear)
    is merged into its producer, when the producer has no activation yet, its output has that one consumer
    and is not a graph output. The merged node's output takes the activation's output name."""
    consumer_count = collections.Counter(v for node in graph.nodes for v in set(node.inputs))
    nodes = []
    index_of = {}  # value name -> index in `nodes` of the node producing it
    for node in graph.nodes:
        act = _activation(node)
        producer_index = index_of.get(node.inputs[0]) if act else None
        if producer_index is not None:
            producer = nodes[producer_index]
            if (producer.op in _ABSORBERS[act] and producer.attrs.get("act", "none") == "none"
                    and consumer_count[producer.output] == 1 and producer.output not in graph.outputs):
                fused = copy.deepcopy(producer)
                fused.attrs["act"] = act
                fused.output = node.output
                nodes[producer_index] = fused
                del index_of[producer.output]
                index_of[fused.output] = producer_index
                continue
        index_of[node.output] = len(nodes)
        nodes.append(node)
    return graph.with_nodes(nodes)
