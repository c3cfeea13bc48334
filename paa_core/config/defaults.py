"""The default config tree.

Every key a config file may set lives here with its default; yacs rejects keys that
are not in this tree, so a misspelled key in a YAML file fails at load time.
Defaults follow the reference PAA setup (docs/DESIGN.md); the seed-table configs in
`configs/paa/` only override what differs per row.

The tree also holds every key of the reference implementation's tree, under the
reference's names, so that files written for it (its `configs/paa/*.yaml`, the
`config.yml` it saved beside each checkpoint) load unchanged: keys of parts paa_core
has take effect here; keys of parts it leaves out are added by `reference.py`, inert
while their part is off, and `reference.check_reference_switches` refuses a file that
switches such a part on. Our defaults differ from the reference tree's own defaults only
where its PAA configs set the key anyway (MODEL.PAA_ON, MODEL.RPN_ONLY,
MODEL.BACKBONE.CONV_BODY, MODEL.RETINANET.USE_C5, the solver schedule, ...): the
reference's bare defaults describe a Faster R-CNN, ours the PAA R-50-FPN 1x recipe.
"""

import os

from yacs.config import CfgNode as CN

from .reference import add_reference_parts

_C = CN()

_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
# "cuda" falls back to "cpu" with a warning when no GPU is visible.
_C.MODEL.DEVICE = "cuda"
# Initial weights: a local path, a URL or a "catalog://" name.
_C.MODEL.WEIGHT = ""
# PAA_ON True: the one-stage PAA detector (MODEL.PAA). False: Faster R-CNN, an RPN
# (MODEL.RPN, with PAA labels when MODEL.RPN.USE_PAA) followed by the ROI box head
# (MODEL.ROI_HEADS, MODEL.ROI_BOX_HEAD) unless RPN_ONLY, which outputs the proposals.
# The reference's tree defaults both to False; its PAA configs set both True (a PAA model
# has no ROI heads), so ours default to the PAA detector and the Faster R-CNN configs
# set them False.
_C.MODEL.PAA_ON = True
_C.MODEL.RPN_ONLY = True
# The 3x3 convolutions of the FPN and the PAA head towers (stride 1, 128 channels or more)
# run by Winograd's F(4x4, 3x3) on the CPU in float32, when their output has 256 tiles of
# 4x4 or more: the same function with 4x fewer multiplications, float32 rounding differing
# by ~1e-5 of the output (docs/DESIGN.md). False: the framework's convolution throughout.
_C.MODEL.WINOGRAD = True

# -----------------------------------------------------------------------------
# Input
# -----------------------------------------------------------------------------
_C.INPUT = CN()
# Shorter side in training: one value picked at random from this tuple ...
_C.INPUT.MIN_SIZE_TRAIN = (800,)
# ... or, when both are > 0, an integer drawn uniformly from [lo, hi].
_C.INPUT.MIN_SIZE_RANGE_TRAIN = (-1, -1)
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# BGR means of the MSRA Caffe2 backbones, on 0-255 pixels.
_C.INPUT.PIXEL_MEAN = [102.9801, 115.9465, 122.7717]
_C.INPUT.PIXEL_STD = [1.0, 1.0, 1.0]
_C.INPUT.TO_BGR255 = True
_C.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = 0.5

# -----------------------------------------------------------------------------
# Datasets: names from paths_catalog.py, or "name:image_dir:annotation.json"
# -----------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()
_C.DATASETS.TEST = ()

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
# Batches are zero-padded so that height and width are multiples of this.
_C.DATALOADER.SIZE_DIVISIBILITY = 32
_C.DATALOADER.ASPECT_RATIO_GROUPING = True

# -----------------------------------------------------------------------------
# Backbone
# -----------------------------------------------------------------------------
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.CONV_BODY = "R-50-FPN-RETINANET"
# Stages up to and including this one get no gradient (1 = stem and res2).
_C.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 2

_C.MODEL.FPN = CN()
# GroupNorm (sized by MODEL.GROUP_NORM) after each FPN conv, which then has no bias; ReLU after it.
_C.MODEL.FPN.USE_GN = False
_C.MODEL.FPN.USE_RELU = False

# GroupNorm of the FPN (FPN.USE_GN): NUM_GROUPS groups, or groups of DIM_PER_GP channels
# (set the other to -1). The head's GroupNorm has 32 groups regardless, as in the reference.
_C.MODEL.GROUP_NORM = CN()
_C.MODEL.GROUP_NORM.DIM_PER_GP = -1
_C.MODEL.GROUP_NORM.NUM_GROUPS = 32
_C.MODEL.GROUP_NORM.EPSILON = 1e-5

# The reference keeps this FPN switch under MODEL.RETINANET (the rest of that node is
# RetinaNet's head, which paa_core leaves out): P6 is computed from C5 when True, from P5
# when False. PAA uses P5; the reference's tree defaults to True, its PAA configs set False.
_C.MODEL.RETINANET = CN()
_C.MODEL.RETINANET.USE_C5 = False
# Biases in the lateral and output convs of the P2-P6 FPN (Faster R-CNN). The PAA
# Faster R-CNN authors' FPN had none; stock detectron2 weights have them.
_C.MODEL.FPN.USE_BIAS = True

_C.MODEL.RESNETS = CN()
# 1 for ResNet, 32 or 64 for ResNeXt.
_C.MODEL.RESNETS.NUM_GROUPS = 1
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
# True puts the stride in the 1x1 conv of a bottleneck (MSRA), False in the 3x3.
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True
_C.MODEL.RESNETS.TRANS_FUNC = "BottleneckWithFixedBatchNorm"
_C.MODEL.RESNETS.STEM_FUNC = "StemWithFixedBatchNorm"
_C.MODEL.RESNETS.RES5_DILATION = 1
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.BACKBONE_OUT_CHANNELS = 256
# One flag per stage res2..res5: use a deformable conv for each block's 3x3.
_C.MODEL.RESNETS.STAGE_WITH_DCN = (False, False, False, False)
_C.MODEL.RESNETS.WITH_MODULATED_DCN = False
_C.MODEL.RESNETS.DEFORMABLE_GROUPS = 1

# -----------------------------------------------------------------------------
# PAA head, anchors, assignment, losses and inference
# -----------------------------------------------------------------------------
_C.MODEL.PAA = CN()
# Number of classes including the background (COCO: 80 + 1).
_C.MODEL.PAA.NUM_CLASSES = 81
# Anchors: one size and one stride per FPN level P3..P7.
_C.MODEL.PAA.ANCHOR_SIZES = (64, 128, 256, 512, 1024)
_C.MODEL.PAA.ANCHOR_STRIDES = (8, 16, 32, 64, 128)
_C.MODEL.PAA.ASPECT_RATIOS = (1.0,)
_C.MODEL.PAA.OCTAVE = 2.0
_C.MODEL.PAA.SCALES_PER_OCTAVE = 1
# Inert: the reference's key, which only marked anchors crossing the image border; PAA
# never used that mark, so every anchor takes part.
_C.MODEL.PAA.STRADDLE_THRESH = 0
# Head.
_C.MODEL.PAA.NUM_CONVS = 4
_C.MODEL.PAA.PRIOR_PROB = 0.01
_C.MODEL.PAA.USE_DCN_IN_TOWER = False
_C.MODEL.PAA.USE_IOU_PRED = True
# Assignment: IoU pre-assignment threshold and candidates per GT per level.
_C.MODEL.PAA.IOU_THRESHOLD = 0.1
_C.MODEL.PAA.TOPK = 9
# Initial variances of each GT's two-component mixture: "unit" (the paper's), or "spread":
# the variance of that GT's candidate scores (a departure, for ablations; docs/DESIGN.md §9).
_C.MODEL.PAA.GMM_INIT_VARIANCE = "unit"
# Losses.
_C.MODEL.PAA.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.PAA.LOSS_ALPHA = 0.25
_C.MODEL.PAA.LOSS_GAMMA = 2.0
_C.MODEL.PAA.REG_LOSS_WEIGHT = 1.3
_C.MODEL.PAA.IOU_LOSS_WEIGHT = 0.5
# Box loss: "iou" and "giou" both mean the GIoU loss (the reference's only working type).
_C.MODEL.PAA.REG_LOSS_TYPE = "iou"
# Inference.
_C.MODEL.PAA.INFERENCE_TH = 0.05
_C.MODEL.PAA.PRE_NMS_TOP_N = 1000
_C.MODEL.PAA.NMS_TH = 0.6
_C.MODEL.PAA.INFERENCE_SCORE_VOTING = True

# -----------------------------------------------------------------------------
# Faster R-CNN (MODEL.PAA_ON False): RPN over P2..P6, then the ROI box head on P2..P5.
# Boxes on this path use detectron2's convention (width x2 - x1, no +1).
# -----------------------------------------------------------------------------
_C.MODEL.RPN = CN()
_C.MODEL.RPN.RPN_HEAD = "SingleConvRPNHead"
# One anchor size and one stride per level P2..P6; ratios are height / width.
_C.MODEL.RPN.ANCHOR_SIZES = (32, 64, 128, 256, 512)
_C.MODEL.RPN.ANCHOR_STRIDE = (4, 8, 16, 32, 64)
_C.MODEL.RPN.ASPECT_RATIOS = (0.5, 1.0, 2.0)
# IoU labels (standard RPN): >= FG positive, < BG negative, in between ignored; every
# anchor that is some GT's best match is positive. With USE_PAA these thresholds (0.1,
# 0.1) choose the PAA candidates.
_C.MODEL.RPN.FG_IOU_THRESHOLD = 0.7
_C.MODEL.RPN.BG_IOU_THRESHOLD = 0.3
# Anchors sampled per image for the losses, and the largest positive share of them.
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
# Proposals: top-k per level before NMS, NMS per level, then top-k per image.
_C.MODEL.RPN.PRE_NMS_TOP_N_TRAIN = 2000
_C.MODEL.RPN.PRE_NMS_TOP_N_TEST = 1000
_C.MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN = 1000
_C.MODEL.RPN.FPN_POST_NMS_TOP_N_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
# Proposals narrower or lower than this are dropped (0: only empty ones).
_C.MODEL.RPN.MIN_SIZE = 0
# PAA in the RPN: labels from the GMM split of each GT's PAA_TOPK lowest-cost candidates
# per level; USE_IOU_PRED adds the IoU branch that weights the regression loss and
# ranks proposals by sqrt(objectness * IoU).
_C.MODEL.RPN.USE_PAA = False
_C.MODEL.RPN.USE_IOU_PRED = False
_C.MODEL.RPN.PAA_TOPK = 9

_C.MODEL.ROI_HEADS = CN()
# Proposal-GT IoU >= FG is foreground, < BG background.
_C.MODEL.ROI_HEADS.FG_IOU_THRESHOLD = 0.5
_C.MODEL.ROI_HEADS.BG_IOU_THRESHOLD = 0.5
_C.MODEL.ROI_HEADS.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
# Inference: class score threshold, per-class NMS, detections kept per image.
_C.MODEL.ROI_HEADS.SCORE_THRESH = 0.05
_C.MODEL.ROI_HEADS.NMS = 0.5
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMG = 100

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR = "FPN2MLPFeatureExtractor"
_C.MODEL.ROI_BOX_HEAD.PREDICTOR = "FPNPredictor"
# Aligned ROIAlign (half-pixel offset) over P2..P5; sampling ratio 0 is adaptive.
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_BOX_HEAD.POOLER_SCALES = (0.25, 0.125, 0.0625, 0.03125)
# Number of classes including the background (COCO: 80 + 1).
_C.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 81
_C.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = 1024

# -----------------------------------------------------------------------------
# Solver
# -----------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.MAX_ITER = 90000
# "SGD" (momentum MOMENTUM) or "AdamW" (betas BETAS); WEIGHT_DECAY is decoupled for AdamW.
_C.SOLVER.OPTIMIZER = "SGD"
_C.SOLVER.BASE_LR = 0.01
_C.SOLVER.BIAS_LR_FACTOR = 2
# Learning-rate factor of the deformable convs' offset (and mask) convs.
_C.SOLVER.DCONV_OFFSETS_LR_FACTOR = 1.0
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.BETAS = (0.9, 0.999)
# Mixed precision of the training forward/backward: "off" (float32), "bf16" (convolutions in
# bfloat16 under torch.autocast; assignment and losses stay float32), "fp16" (float16, with a
# gradient scaler whose state is checkpointed) or "auto" (bf16 where the device computes it
# natively: a CPU with AVX512-BF16 or AMX, a CUDA GPU with bf16; fp16 on a CUDA GPU without
# bf16; float32 on other CPUs).
_C.SOLVER.AMP = "off"
_C.SOLVER.WEIGHT_DECAY = 0.0001
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEPS = (60000, 80000)
_C.SOLVER.WARMUP_FACTOR = 1.0 / 3
_C.SOLVER.WARMUP_ITERS = 500
# "constant" or "linear".
_C.SOLVER.WARMUP_METHOD = "constant"
_C.SOLVER.CHECKPOINT_PERIOD = 2500
# Global batch size, split evenly over the processes.
_C.SOLVER.IMS_PER_BATCH = 16

# -----------------------------------------------------------------------------
# Test
# -----------------------------------------------------------------------------
_C.TEST = CN()
# [(task, metric, value, sigma)], e.g. [["bbox", "AP", 0.404, 0.002]].
_C.TEST.EXPECTED_RESULTS = []
_C.TEST.EXPECTED_RESULTS_SIGMA_TOL = 4
# Global batch size, split evenly over the processes.
_C.TEST.IMS_PER_BATCH = 8
_C.TEST.DETECTIONS_PER_IMG = 100

# Multi-scale and flip test-time augmentation (docs/DESIGN.md §7).
_C.TEST.BBOX_AUG = CN()
_C.TEST.BBOX_AUG.ENABLED = False
_C.TEST.BBOX_AUG.H_FLIP = False
_C.TEST.BBOX_AUG.SCALES = ()
_C.TEST.BBOX_AUG.MAX_SIZE = 4000
_C.TEST.BBOX_AUG.SCALE_H_FLIP = False
# One (min, max) side range per scale; boxes outside it are dropped at that scale.
_C.TEST.BBOX_AUG.SCALE_RANGES = ()
_C.TEST.BBOX_AUG.VOTE = False
_C.TEST.BBOX_AUG.VOTE_TH = 0.66
# "vote" or "soft-vote".
_C.TEST.BBOX_AUG.MERGE_TYPE = "vote"
# "soft-vote" also keeps a cluster member at score * (1 - IoU with its leader) when that is
# at least this.
_C.TEST.BBOX_AUG.SOFT_VOTE_TH = 0.05
# With VOTE: at most this many merged boxes per image (boxes tied at the cut stay).
_C.TEST.BBOX_AUG.VOTE_MAX_DETECTIONS = 1000
# SCALES below this keep INPUT.MAX_SIZE_TEST as the longer-side cap, the others use MAX_SIZE.
_C.TEST.BBOX_AUG.MAX_SIZE_FROM_SCALE = 800

# -----------------------------------------------------------------------------
# Misc
# -----------------------------------------------------------------------------
_C.OUTPUT_DIR = "."
# Random seed of each process (plus its rank) for weights init and augmentation.
_C.SEED = 0
_C.PATHS_CATALOG = os.path.join(os.path.dirname(__file__), "paths_catalog.py")

add_reference_parts(_C)
