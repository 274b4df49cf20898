/* The subcommands of the osprey command, one file each (cmd_<name>.c).
 * Each returns the process exit status: 0 success, 1 user error (with a
 * one-line message already printed), 2 internal failure. */
#ifndef OSPREY_TOOLS_COMMANDS_H
#define OSPREY_TOOLS_COMMANDS_H

#define OSP_COMMAND_LIST(X)                                                \
    X(train, "train a network from a spec on a dataset")                  \
    X(eval, "accuracy and loss of a model on a dataset")                  \
    X(run, "raw inference on a .npy batch (any layer's activations)")     \
    X(info, "layers, shapes, parameter count and metadata of a model")    \
    X(export, "a model as an ONNX file")                                  \
    X(import, "an ONNX model to an osprey model")                         \
    X(quantize, "an int8 copy of a model, calibrated on sample images")   \
    X(dataset, "check a dataset's images, or time its input pipeline")    \
    X(tag, "top labels of every image in files, folders or lists")        \
    X(embed, "a feature vector of every image, from any layer")           \
    X(merge, "join the output folders of a run's shards into one")        \
    X(index, "build, search and edit vector indexes")                     \
    X(hash, "learned binary hash codes: train, apply to vectors")         \
    X(similar, "the images nearest a query image or id, from an index")   \
    X(serve, "an HTTP worker: labels and similar images of one shard")   \
    X(route, "an HTTP router over shard workers, with the web page")     \
    X(bench, "images/s of a network's training step or inference")      \
    X(submit, "queue an osprey command as a task on the broker (Redis)")\
    X(worker, "run the broker's tasks that fit this machine")          \
    X(status, "the state of tasks and workers, or watch it change")     \
    X(logs, "the output lines of a task, or follow them")              \
    X(cancel, "cancel a queued or running task")                       \
    X(results, "the result of a task: exit status, files, summary")    \
    X(sweep, "queue a grid of settings as tasks; report the best")       \
    X(advise, "batch size, threads and ranks that train fastest here")

#define OSP_X_DECLARE(name, summary) int cmd_##name(int argc, char **argv);
OSP_COMMAND_LIST(OSP_X_DECLARE)
#undef OSP_X_DECLARE

#endif
