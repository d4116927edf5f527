"""``synthetic-shop``: a seeded simulator of an e-commerce shop, with ground truth.

The generator writes a catalogue and a behaviour log that read like a real shop, together with
the truth that produced them: which interests each user held and when, and when they shifted.
It serves three purposes: exercising the importer's cleaning rules (bots, malformed rows, with
and without ``event_id``), scoring interest and shift detection against ground truth, and
benchmarking import speed (the default config writes about 300,000 events).

Files written by :func:`generate` into ``out_dir``:

``items.csv``
    Columns exactly :data:`~tansuo.data.schema.ITEM_COLUMNS`. ``category`` is a three-level
    path (``Sports > Running > Shoes``); the first two levels are one of the shop's interests
    (:func:`interest_taxonomy`). ``attributes`` is a JSON object string, ``created_at`` is ISO
    8601 UTC (``...Z``); about 10% of items are created during the simulated period.
``events.csv``
    Columns exactly :data:`~tansuo.data.schema.EVENT_COLUMNS`. ``timestamp`` is ISO 8601 UTC
    with millisecond precision and a ``Z``. ``event_id`` is empty for most rows and ``E``-prefixed
    for about 3%. ``request_id`` and ``position`` are always empty. **Order:** rows are grouped
    by user in ascending ``user_id`` order; within a user they are in non-decreasing time order
    (malformed rows keep the slot of the event they replaced). The file is *not* globally sorted
    by time.
``truth_interests.csv``
    ``user_id, interest, tag, category, start, end, weight, latent``: one row per
    (user, interest, active span). ``end`` is empty when the interest is still active at the end
    of the simulation. ``weight`` is the span's base weight (relative; the effective weight also
    drifts smoothly over time). ``latent=1`` rows are interests the user would like but never
    acts on: they produce no events at all. Bots have no rows.
``truth_shifts.csv``
    ``user_id, timestamp, left, arrived, event_index``: at ``timestamp`` the user dropped
    interest ``left`` and picked up ``arrived``. ``event_index`` is the 0-based index of the
    user's first event at or after the shift within that user's time-ordered sequence of
    *well-formed* rows (malformed rows excluded); empty if the user has no event after it.
``meta.json``
    The config, counts (users, items, events written, bot user ids, malformed rows per kind,
    shifts, ...) and the generator version.

Malformed rows (``malformed_share`` of event rows, each replacing a real event) come in five
kinds, counted per kind in ``meta.json``: ``bad_timestamp`` (``"not-a-date"``),
``future_timestamp`` (year 2199), ``unknown_type`` (``"teleport"``), ``missing_user`` (empty
``user_id``) and ``negative_dwell``. Every other row is well-formed. Bots (``bot_share`` of users)
fire bursts of 150-450 views inside one minute; their rows are otherwise well-formed.

Generation streams: users are simulated and written in blocks, so memory is bounded by the block
size, not by the number of users. Output is byte-for-byte deterministic given the config: each
user draws from its own :class:`numpy.random.Generator` derived from ``(seed, user index)``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from tansuo.data.schema import EVENT_COLUMNS, ITEM_COLUMNS, EventType

__all__ = [
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "MALFORMED_KINDS",
    "Interest",
    "ShopConfig",
    "ShopFiles",
    "generate",
    "interest_taxonomy",
]

#: Name recorded in ``meta.json``.
GENERATOR_NAME = "synthetic-shop"
#: Bumped whenever the output for a given config changes.
GENERATOR_VERSION = "1.0"
#: Kinds of malformed event rows, in the order used for counting.
MALFORMED_KINDS: tuple[str, ...] = (
    "bad_timestamp",
    "future_timestamp",
    "unknown_type",
    "missing_user",
    "negative_dwell",
)

TRUTH_INTEREST_COLUMNS: tuple[str, ...] = (
    "user_id",
    "interest",
    "tag",
    "category",
    "start",
    "end",
    "weight",
    "latent",
)
TRUTH_SHIFT_COLUMNS: tuple[str, ...] = ("user_id", "timestamp", "left", "arrived", "event_index")


# --------------------------------------------------------------------------------------------
# Public dataclasses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interest:
    """One interest the shop knows: a level-2 category such as ``Sports > Running``."""

    #: Stable identifier, ``department-slug/interest-slug`` (e.g. ``"sports/running"``).
    key: str
    #: Human words for the interest (e.g. ``"running"``).
    tag: str
    #: Category path prefix of the interest's items (e.g. ``"Sports > Running"``).
    category: str
    #: Search phrases shoppers with this interest type (e.g. ``"trail running shoes"``).
    phrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShopConfig:
    """Size and behaviour of the simulated shop. The defaults give about 300,000 events."""

    #: Number of users (including bots).
    users: int = 2000
    #: Number of catalogue items.
    items: int = 3000
    #: Mean number of events per (human) user; activity is lognormal around it.
    events_per_user: float = 150.0
    #: Seed of all randomness; same config and seed give byte-identical files.
    seed: int = 0
    #: Start of the simulated period, ISO 8601 UTC.
    start: str = "2026-01-01T00:00:00Z"
    #: Length of the simulated period in days.
    days: int = 120
    #: Minimum and maximum number of concurrent true (shown) interests per user.
    interests_per_user: tuple[int, int] = (2, 4)
    #: Share of (human) users that get at least one interest shift.
    shift_probability: float = 0.6
    #: Interests a user holds but never acts on (ground truth only, event-free).
    latent_interests: int = 1
    #: Share of users that are bots (bursts of more than 100 views per minute).
    bot_share: float = 0.005
    #: Share of event rows written malformed (each replaces a real event).
    malformed_share: float = 0.001

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError("users must be >= 1")
        if self.items < 1:
            raise ValueError("items must be >= 1")
        if not self.events_per_user >= 0:
            raise ValueError("events_per_user must be >= 0")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        lo, hi = self.interests_per_user
        if not 1 <= lo <= hi:
            raise ValueError("interests_per_user must be (min, max) with 1 <= min <= max")
        if self.latent_interests < 0:
            raise ValueError("latent_interests must be >= 0")
        for name in ("shift_probability", "bot_share", "malformed_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        _parse_start(self.start)


@dataclass(frozen=True)
class ShopFiles:
    """Paths of the files written by :func:`generate`."""

    #: The output directory.
    directory: Path
    #: ``items.csv``: the catalogue.
    items: Path
    #: ``events.csv``: the behaviour log.
    events: Path
    #: ``truth_interests.csv``: true interest spans per user.
    interests: Path
    #: ``truth_shifts.csv``: true interest shifts.
    shifts: Path
    #: ``meta.json``: config, counts and generator version.
    meta: Path


# --------------------------------------------------------------------------------------------
# Taxonomy
# --------------------------------------------------------------------------------------------
# department: (name, slug, title style, brands, model words, default attributes, closing
#              sentences, interests)
# interest:   (slug, name, tag, "made ..." phrase, search phrases, leaves)
# leaf:       (name, median price, product nouns ("Noun" or "Noun=own median price"),
#              attributes "key:v1,v2;key2:...")
# The first attribute of a leaf (or of the department default) is shown in the title.

_Leaf = tuple[str, float, str, str]
_Int = tuple[str, str, str, str, str, tuple[_Leaf, ...]]

_TREE: tuple[tuple[str, str, str, str, str, str, str, tuple[_Int, ...]], ...] = (
    (
        "Sports", "sports", "numbered",
        "Stridewell|Apexor|Kinetra|Northpace|Velocore|Ironvale|Zenfold|Trailhawk",
        "Tempo|Apex|Stride|Pulse|Surge|Vector|Glide|Summit|Flux|Racer",
        "color:Black,Blue,Grey,Red,White",
        "Backed by a two-year warranty.|Free returns within 30 days.|"
        "Rated highly by customers for comfort and durability.",
        (
            ("running", "Running", "running", "for daily miles and race day",
             "running shoes|trail running shoes|marathon shoes|gps running watch|"
             "running shorts|carbon plate shoes",
             (("Shoes", 120, "Running Shoes|Trail Running Shoes|Road Racing Shoes",
               "feature:Waterproof,Wide Fit,Neutral,Stability,Cushioned;"
               "color:Black,Blue,Volt,Grey,Red;size:7,8,9,10,11,12"),
              ("Apparel", 40, "Running Shorts|Running Tights|Running Jacket|Technical Tee",
               "color:Black,Navy,Coral,Olive;size:XS,S,M,L,XL;fit:Slim,Regular"),
              ("GPS Watches", 250, "GPS Running Watch|Heart Rate Monitor=70",
               "feature:Solar,AMOLED,Music,Multiband;color:Black,Slate,White"),
              ("Accessories", 22, "Running Socks|Hydration Vest=80|Running Belt",
               "color:Black,Blue,Orange;size:S,M,L"))),
            ("cycling", "Cycling", "cycling", "for long rides and fast commutes",
             "road bike|gravel bike|bike helmet|cycling shoes|bike lights|clipless pedals",
             (("Bikes", 1200, "Road Bike|Gravel Bike|Hybrid Bike",
               "frame:Carbon,Aluminium,Steel;size:S,M,L,XL;color:Black,Red,Sage,Blue"),
              ("Helmets", 90, "Cycling Helmet|MIPS Road Helmet|Commuter Helmet",
               "feature:MIPS,Aero,Lightweight;size:S,M,L;color:Black,White,Red"),
              ("Components", 60, "Clipless Pedals=90|Bike Light Set=45|Bike Computer=180|Saddle=70",
               "color:Black,Silver"))),
            ("yoga", "Yoga & Pilates", "yoga", "for a steady practice at home or in the studio",
             "yoga mat|non slip yoga mat|yoga blocks|pilates ring|yoga leggings",
             (("Mats", 45, "Yoga Mat|Travel Yoga Mat|Cork Yoga Mat",
               "feature:Non-Slip,Extra Thick,Eco TPU;color:Sage,Plum,Charcoal,Sand;"
               "thickness:4 mm,6 mm,8 mm"),
              ("Props", 20, "Yoga Block Set|Yoga Strap|Pilates Ring|Meditation Cushion=45",
               "color:Sage,Plum,Charcoal,Sand"),
              ("Apparel", 50, "Yoga Leggings|Yoga Top|Wrap Cardigan",
               "color:Black,Mauve,Forest,Oat;size:XS,S,M,L,XL"))),
            ("strength-training", "Strength Training", "strength training",
             "for serious strength work in a home gym",
             "adjustable dumbbells|kettlebell|weight bench|resistance bands|pull up bar",
             (("Free Weights", 90, "Adjustable Dumbbells=220|Kettlebell|Weight Plate Set=150",
               "weight:12 kg,16 kg,24 kg,32 kg;finish:Cast Iron,Rubber Coated"),
              ("Benches & Racks", 250, "Adjustable Weight Bench|Squat Rack=450|Pull-Up Bar=40",
               "feature:Foldable,Heavy Duty,Compact;color:Black,Red"),
              ("Accessories", 25, "Resistance Band Set|Lifting Belt=45|Wrist Wraps=15|Chalk Bag=15",
               "color:Black,Red,Grey;size:S,M,L"))),
        ),
    ),
    (
        "Home & Kitchen", "home-kitchen", "named",
        "Brewline|Copperleaf|Hearthwell|Maison Orla|Kettlecraft|Oakhollow|Velluto|Ninefold",
        "Classic|Signature|Heritage|Precision|Artisan|Essential|Pro Series|Everyday",
        "color:Stainless,Black,White,Sage,Cream",
        "Dishwasher-safe parts make cleanup easy.|Covered by a three-year warranty.|"
        "A favourite with home cooks.",
        (
            ("coffee-espresso", "Coffee & Espresso", "home espresso",
             "for cafe-quality coffee at home",
             "espresso machine|espresso grinder|burr grinder|milk frother|pour over kettle|"
             "moka pot",
             (("Espresso Machines", 450,
               "Espresso Machine|Dual Boiler Espresso Machine|Lever Espresso Machine",
               "finish:Stainless,Black,Cream,Brushed Copper;capacity:1.8 L,2 L,2.5 L"),
              ("Grinders", 180, "Burr Coffee Grinder|Flat Burr Espresso Grinder=350|"
                                "Hand Grinder=120",
               "finish:Stainless,Matte Black,White;burr:Conical,Flat"),
              ("Brewing Accessories", 35,
               "Milk Frothing Pitcher=25|Espresso Tamper=30|Pour-Over Kettle=70|Moka Pot|"
               "Knock Box=25",
               "finish:Stainless,Black,Copper"))),
            ("cookware", "Cookware", "cooking", "for everyday cooking and weekend feasts",
             "cast iron skillet|nonstick pan|dutch oven|chef knife|knife set|carbon steel wok",
             (("Pans & Skillets", 60, "Cast Iron Skillet|Nonstick Frying Pan|Carbon Steel Wok",
               "size:20 cm,24 cm,28 cm,30 cm;material:Cast Iron,Carbon Steel,Tri-Ply"),
              ("Dutch Ovens & Pots", 120, "Enameled Dutch Oven|Stock Pot|Saucepan Set",
               "color:Cherry,Sea Blue,Matte Black,Cream;capacity:3 L,5 L,7 L"),
              ("Knives", 80, "Chef Knife|Santoku Knife|Knife Block Set=220",
               "steel:Damascus Steel,German Steel,Japanese Steel;length:15 cm,20 cm,23 cm"))),
            ("baking", "Baking", "baking", "for bakers who want reliable results",
             "stand mixer|sourdough starter kit|baking sheet|bread proofing basket|cake pan",
             (("Mixers", 300, "Stand Mixer|Hand Mixer=60",
               "color:Pistachio,Empire Red,Silver,Matte White;capacity:4.5 L,5.5 L"),
              ("Bakeware", 25, "Baking Sheet Set|Springform Cake Pan|Loaf Pan|Muffin Tin",
               "material:Aluminized Steel,Silicone,Glass"),
              ("Bread Making", 30, "Bread Proofing Basket|Sourdough Starter Kit|"
               "Dough Scraper Set", "shape:Round,Oval;material:Rattan,Steel"))),
            ("bedding", "Bedding", "bedding", "for deeper, cooler sleep",
             "linen duvet cover|cooling pillow|weighted blanket|sateen sheets",
             (("Sheets", 90, "Sateen Sheet Set|Linen Sheet Set|Percale Sheet Set",
               "size:Queen,King,Double,Single;color:White,Oat,Sage,Slate"),
              ("Pillows", 45, "Memory Foam Pillow|Down Alternative Pillow|Cooling Pillow",
               "firmness:Soft,Medium,Firm"),
              ("Blankets", 80, "Weighted Blanket=110|Wool Throw|Duvet Insert=120",
               "size:Queen,King,Double;color:Oat,Charcoal,Rust,Sage"))),
        ),
    ),
    (
        "Electronics", "electronics", "numbered",
        "Voltix|Sonara|Lumatek|Quellio|Nordwave|Pixelhaus|Corevia|Helion",
        "Studio|Air|Max|One|Edge|Nova|Pulse|Ultra",
        "color:Black,White,Silver,Midnight Blue",
        "Includes a USB-C charging cable.|Firmware updates add features over time.|"
        "Two-year manufacturer warranty included.",
        (
            ("headphones-audio", "Headphones & Audio", "headphones",
             "for music, calls and long flights",
             "noise cancelling headphones|wireless earbuds|bluetooth speaker|studio headphones",
             (("Headphones", 180, "Wireless Headphones|Over-Ear Headphones|Studio Headphones",
               "feature:Noise Cancelling,Hi-Res,Open-Back;color:Black,Silver,Midnight Blue"),
              ("Earbuds", 110, "Wireless Earbuds|Sport Earbuds",
               "feature:Noise Cancelling,Waterproof,Ear Hooks;color:Black,White,Sand"),
              ("Speakers", 120, "Bluetooth Speaker|Smart Speaker|Bookshelf Speakers=300",
               "feature:Waterproof,Stereo Pair,Wi-Fi;color:Black,White,Teal"))),
            ("photography", "Photography", "photography", "for travel, portraits and video",
             "mirrorless camera|prime lens|camera tripod|camera bag|sd card",
             (("Cameras", 1100, "Mirrorless Camera|Compact Camera=600|Action Camera=350",
               "kit:Body Only,Kit Lens,Creator Bundle;color:Black,Silver"),
              ("Lenses", 500, "Prime Lens|Zoom Lens|Macro Lens",
               "mount:E-Mount,RF-Mount,Z-Mount,X-Mount"),
              ("Accessories", 60, "Carbon Fibre Tripod=150|Camera Backpack=110|SD Card=30|"
                                  "Camera Strap=30",
               "color:Black,Grey"))),
            ("gaming", "PC Gaming", "pc gaming", "for long sessions and competitive play",
             "mechanical keyboard|gaming mouse|gaming headset|gaming monitor|controller",
             (("Keyboards & Mice", 80, "Mechanical Keyboard|Gaming Mouse|Wireless Gaming Mouse",
               "feature:RGB,Hot-Swappable,Low Profile,Wireless;switch:Red,Brown,Blue"),
              ("Monitors", 350, "Gaming Monitor|Ultrawide Monitor|OLED Gaming Monitor",
               "size:27 in,32 in,34 in;refresh:144 Hz,165 Hz,240 Hz"),
              ("Controllers & Headsets", 70, "Wireless Controller|Gaming Headset=90",
               "color:Black,White,Camo"))),
            ("smart-home", "Smart Home", "smart home", "for a home that runs itself",
             "smart plug|video doorbell|smart thermostat|smart bulbs|smart lock",
             (("Lighting", 35, "Smart Bulb 4-Pack=45|LED Light Strip|Smart Plug=20",
               "feature:Full Colour,Warm White,Matter-Ready"),
              ("Security", 130, "Video Doorbell|Indoor Camera=60|Smart Lock=200",
               "feature:2K Video,Battery Powered,Night Vision"),
              ("Climate", 160, "Smart Thermostat=200|Air Purifier=180|Smart Fan=90",
               "color:White,Black,Graphite"))),
        ),
    ),
    (
        "Fashion", "fashion", "named",
        "Marlowe & Finch|Oslo Thread|Corvid|Atelier Nove|Harbor Lane|Wilder Row|Kestrel|"
        "Ember & Ash",
        "Heritage|Field|Metro|Weekend|Signature|Atlas|Harbor|Nordic",
        "color:Black,Navy,Camel,Olive,Grey;size:XS,S,M,L,XL",
        "Cut for a relaxed, modern fit.|Made from responsibly sourced materials.|"
        "Free exchanges on all sizes.",
        (
            ("outerwear", "Outerwear", "jackets and coats", "for cold mornings and city rain",
             "down jacket|rain jacket|wool coat|puffer vest|trench coat",
             (("Coats", 200, "Wool Overcoat|Trench Coat|Parka",
               "color:Camel,Charcoal,Navy,Black;size:XS,S,M,L,XL"),
              ("Jackets", 130, "Down Jacket|Rain Jacket|Quilted Jacket|Denim Jacket",
               "color:Black,Olive,Navy,Stone;size:XS,S,M,L,XL"),
              ("Vests", 70, "Puffer Vest|Fleece Vest",
               "color:Black,Olive,Rust;size:S,M,L,XL"))),
            ("watches-jewelry", "Watches & Jewelry", "watches", "to wear every day for years",
             "automatic watch|dive watch|silver necklace|gold hoop earrings|field watch",
             (("Watches", 250, "Automatic Watch|Dive Watch|Chronograph Watch|Field Watch",
               "strap:Steel Bracelet,Leather Strap,NATO Strap;dial:Black,Blue,Green,White"),
              ("Jewelry", 60, "Sterling Silver Necklace|Gold Hoop Earrings|Signet Ring",
               "material:Sterling Silver,14k Gold Vermeil,Stainless Steel"))),
            ("handbags", "Handbags", "handbags", "for work, travel and weekends",
             "leather tote|crossbody bag|belt bag|card holder|leather wallet",
             (("Totes", 150, "Leather Tote Bag|Canvas Tote",
               "color:Cognac,Black,Taupe,Olive"),
              ("Crossbody", 110, "Crossbody Bag|Belt Bag|Saddle Bag",
               "color:Cognac,Black,Burgundy,Cream"),
              ("Wallets", 50, "Leather Wallet|Card Holder=35|Zip Wallet",
               "color:Black,Tan,Forest"))),
            ("denim", "Denim", "denim", "to break in and keep for years",
             "slim jeans|straight leg jeans|wide leg jeans|selvedge denim|denim shorts",
             (("Jeans", 80, "Slim Jeans|Straight Leg Jeans|Wide Leg Jeans|Selvedge Jeans",
               "wash:Rinse,Mid Blue,Light Wash,Black;waist:28,30,32,34,36"),
              ("Shorts & Skirts", 45, "Denim Shorts|Denim Skirt",
               "wash:Mid Blue,Light Wash,Black;size:XS,S,M,L"))),
        ),
    ),
    (
        "Beauty", "beauty", "named",
        "Lumea|Dewhaven|Saltmoss|Verite Lab|Petalry|Nordic Bloom|Aurelle|Clearwell",
        "Hydra|Pure|Daily|Radiance|Calm|Glow|Renew|Velvet",
        "size:15 ml,30 ml,50 ml,100 ml",
        "Dermatologist tested.|Fragrance-free and vegan.|Cruelty-free formula.",
        (
            ("skincare", "Skincare", "skincare", "for a simple, effective routine",
             "vitamin c serum|retinol|moisturizer|sunscreen spf 50|gentle cleanser",
             (("Serums", 30, "Vitamin C Serum|Retinol Serum|Hyaluronic Acid Serum|"
               "Niacinamide Serum", "size:15 ml,30 ml,50 ml;skin:Dry,Oily,Combination,Sensitive"),
              ("Moisturizers", 28, "Moisturizer|Night Cream|Gel Cream",
               "size:30 ml,50 ml;skin:Dry,Oily,Combination,Sensitive"),
              ("Sunscreen", 20, "Mineral Sunscreen SPF 50|Daily Sunscreen SPF 30",
               "size:50 ml,100 ml"),
              ("Cleansers", 16, "Foaming Cleanser|Cleansing Balm|Micellar Water",
               "size:100 ml,200 ml,400 ml"))),
            ("makeup", "Makeup", "makeup", "for an everyday look that lasts",
             "foundation|mascara|matte lipstick|eyeshadow palette|concealer",
             (("Face", 32, "Foundation|Concealer|Setting Powder|Blush",
               "shade:Fair,Light,Medium,Tan,Deep;finish:Matte,Dewy,Satin"),
              ("Eyes", 22, "Mascara|Eyeshadow Palette|Eyeliner",
               "shade:Black,Brown,Smoky,Warm Neutrals"),
              ("Lips", 18, "Matte Lipstick|Lip Gloss|Lip Liner",
               "shade:Rosewood,Brick,Nude,Berry,Classic Red"))),
            ("hair-care", "Hair Care", "hair care", "for healthier hair on busy days",
             "hair dryer|curling iron|shampoo for curly hair|hair mask|straightener",
             (("Tools", 120, "Ionic Hair Dryer|Curling Iron|Straightener|Hot Air Brush",
               "color:Black,Rose Gold,White"),
              ("Shampoo & Conditioner", 18, "Shampoo|Conditioner|Hair Mask",
               "hair:Curly,Fine,Colour-Treated,Dry;size:250 ml,500 ml"))),
            ("fragrance", "Fragrance", "fragrance", "to wear from morning to night",
             "eau de parfum|cologne|perfume gift set|discovery set",
             (("Perfume", 85, "Eau de Parfum|Eau de Toilette",
               "notes:Amber,Citrus,Vetiver,Rose,Oud;size:30 ml,50 ml,100 ml"),
              ("Gift Sets", 60, "Fragrance Gift Set|Discovery Set",
               "notes:Amber,Citrus,Floral,Woody"))),
        ),
    ),
    (
        "Toys & Games", "toys-games", "named",
        "Tumblebird|Brightblock|Meeple & Co|Kitebox|Orbit Toys|Puzzlewright|Hopscotch Labs|"
        "Zoomkin",
        "Junior|Classic|Deluxe|Explorer|Legends|Quest|Party|Family",
        "age:3+,6+,8+,12+",
        "Great as a gift.|Easy to learn, hard to put down.|Tested for safety to EU standards.",
        (
            ("board-games", "Board Games", "board games", "for game nights with friends and family",
             "strategy board game|party game|cooperative game|card game|deck building game",
             (("Strategy Games", 45, "Strategy Board Game|Deck-Building Game|"
               "Worker Placement Game",
               "players:1-4 Players,2-5 Players,2-6 Players;age:10+,12+,14+"),
              ("Party Games", 25, "Party Game|Card Game|Trivia Game",
               "players:3-8 Players,4-10 Players;age:12+,16+"),
              ("Family Games", 30, "Family Board Game|Cooperative Board Game",
               "players:2-4 Players,2-6 Players;age:6+,8+"))),
            ("building-sets", "Building Sets", "building sets", "for hours of hands-on building",
             "building blocks|space shuttle building set|race car building set|marble run",
             (("Vehicles", 60, "Race Car Building Set|Space Shuttle Building Set|"
               "Train Building Set", "pieces:450 Pieces,820 Pieces,1200 Pieces;age:8+,12+,18+"),
              ("Architecture", 80, "Skyline Building Set|Castle Building Set|"
               "Treehouse Building Set", "pieces:600 Pieces,1500 Pieces,2400 Pieces"),
              ("Marble Runs", 45, "Marble Run Set|Gear Construction Kit", "age:4+,6+,8+"))),
            ("puzzles", "Puzzles", "jigsaw puzzles", "for slow evenings and rainy weekends",
             "1000 piece puzzle|wooden puzzle|3d puzzle|puzzle mat",
             (("Jigsaw", 20, "Jigsaw Puzzle|Panoramic Jigsaw Puzzle",
               "pieces:500 Pieces,1000 Pieces,2000 Pieces;theme:Landscape,Botanical,Map,Art"),
              ("3D Puzzles", 35, "3D Wooden Puzzle|Puzzle Box|Brain Teaser Set",
               "difficulty:Easy,Medium,Hard"))),
            ("rc-drones", "RC & Drones", "rc cars and drones",
             "for backyard races and aerial shots",
             "rc car|camera drone|rc crawler|fpv drone|mini drone",
             (("RC Cars", 90, "RC Rock Crawler|RC Monster Truck|RC Drift Car",
               "scale:1:10,1:16,1:24;motor:Brushless,Brushed"),
              ("Drones", 150, "Camera Drone=400|FPV Drone=300|Mini Drone=50",
               "feature:4K Camera,GPS Return,Foldable"))),
        ),
    ),
    (
        "Books", "books", "book",
        "Harborlight Press|Quill & Lantern|Northgate Books|Saltmarsh Publishing|"
        "Blue Heron House|Inkwell & Oak",
        "",
        "format:Paperback,Hardcover,Large Print",
        "A bestseller in its category.|Includes a reading group guide.|"
        "Praised by readers and critics alike.",
        (
            ("mystery-thriller", "Mystery & Thriller", "mystery novels",
             "for readers who love a twisty plot",
             "mystery novel|psychological thriller|detective series|crime fiction",
             (("Mystery", 15, "Mystery Novel|Detective Novel",
               "format:Paperback,Hardcover,Large Print"),
              ("Thriller", 16, "Psychological Thriller|Legal Thriller|Spy Thriller",
               "format:Paperback,Hardcover"))),
            ("scifi-fantasy", "Science Fiction & Fantasy", "sci-fi and fantasy",
             "for readers who want other worlds",
             "space opera|epic fantasy|fantasy series|science fiction novel",
             (("Science Fiction", 16, "Space Opera|Science Fiction Novel|Cyberpunk Novel",
               "format:Paperback,Hardcover"),
              ("Fantasy", 17, "Epic Fantasy Novel|Fantasy Adventure|Cozy Fantasy Novel",
               "format:Paperback,Hardcover"))),
            ("cookbooks", "Cookbooks", "cookbooks", "for cooks who read recipes for fun",
             "baking cookbook|vegetarian cookbook|italian cookbook|bbq cookbook",
             (("Baking", 25, "Baking Cookbook|Bread Baking Book", "format:Hardcover,Paperback"),
              ("World Cuisine", 28, "Italian Cookbook|Japanese Cookbook|Mexican Cookbook",
               "format:Hardcover,Paperback"),
              ("Vegetarian", 24, "Vegetarian Cookbook|Plant-Based Cookbook",
               "format:Hardcover,Paperback"))),
            ("childrens-books", "Children's Books", "children's books",
             "for bedtime reading together",
             "picture book|bedtime stories|early reader|board book",
             (("Picture Books", 10, "Picture Book|Bedtime Story Book",
               "format:Hardcover,Paperback"),
              ("Early Readers", 7, "Early Reader|Chapter Book", "format:Paperback"),
              ("Board Books", 8, "Board Book|Lift-the-Flap Book", "format:Board Book"))),
        ),
    ),
    (
        "Outdoors", "outdoors", "numbered",
        "Ridgecrest|Pinewild|Alpenrook|Driftline|Cairnmoor|Summitcraft|Bearpaw Gear|Northfold",
        "Basecamp|Ridge|Trek|Alpine|Ranger|Voyager|Nomad|Cirrus",
        "color:Forest Green,Orange,Slate,Sand",
        "Field-tested in all four seasons.|Lifetime repair programme included.|"
        "Packs down small for the trail.",
        (
            ("camping", "Camping", "camping", "for weekends under the stars",
             "2 person tent|sleeping bag|camping stove|sleeping pad|camp chair",
             (("Tents", 220, "Backpacking Tent|Family Camping Tent|Ultralight Tent",
               "capacity:1-Person,2-Person,4-Person,6-Person;season:3-Season,4-Season"),
              ("Sleeping Bags", 140, "Down Sleeping Bag=220|Synthetic Sleeping Bag|Sleeping Pad=90",
               "rating:-5 C,0 C,5 C;length:Regular,Long"),
              ("Camp Kitchen", 55, "Camping Stove=60|Cook Set=50|Insulated Mug=25",
               "color:Orange,Slate,Olive"))),
            ("hiking", "Hiking", "hiking", "for long days on rough trails",
             "hiking boots|hiking backpack|trekking poles|hydration pack|headlamp",
             (("Boots", 160, "Hiking Boots|Trail Shoes|Mid Hiking Boots",
               "feature:Waterproof,Gore-Tex,Leather;size:7,8,9,10,11,12"),
              ("Packs", 130, "Hiking Backpack|Daypack|Hydration Pack",
               "capacity:20 L,30 L,45 L,65 L;color:Forest Green,Slate,Orange"),
              ("Poles & Accessories", 50, "Trekking Poles=80|Headlamp=40|Gaiters=45",
               "color:Black,Orange,Slate"))),
            ("fishing", "Fishing", "fishing", "for rivers, lakes and early mornings",
             "fly rod|spinning reel|fishing lures|tackle box|fly fishing",
             (("Rods", 120, "Fly Rod|Spinning Rod|Casting Rod",
               "length:6 ft,7 ft,9 ft;power:Light,Medium,Heavy"),
              ("Reels", 90, "Spinning Reel|Fly Reel|Baitcasting Reel",
               "size:1000,2500,4000"),
              ("Tackle", 20, "Lure Kit|Tackle Box|Fly Assortment", "color:Olive,Orange,Clear"))),
            ("climbing", "Climbing", "climbing", "for the gym, the crag and the boulder field",
             "climbing shoes|chalk bag|climbing harness|quickdraws|bouldering crash pad",
             (("Shoes", 130, "Climbing Shoes|Bouldering Shoes",
               "fit:Aggressive,Moderate,Flat;size:7,8,9,10,11"),
              ("Hardware", 60, "Quickdraw Set=110|Locking Carabiner=15|Belay Device=30|"
                               "Climbing Harness=70",
               "color:Blue,Orange,Grey"),
              ("Bouldering", 150, "Crash Pad=250|Chalk Bag=20|Climbing Brush Set=15",
               "color:Slate,Orange,Forest Green"))),
        ),
    ),
    (
        "Grocery", "grocery", "named",
        "Hillcrest Farms|Good Grain Co|Sunward|Little Acre|Moorland Pantry|Roastwright|"
        "Kindred Kitchen|Tidewater",
        "Organic|Classic|Single-Origin|Artisan|Everyday|Reserve|Harvest|Small-Batch",
        "size:250 g,500 g,1 kg",
        "Sourced from independent growers.|Packed in recyclable packaging.|"
        "No artificial flavours or colours.",
        (
            ("coffee-tea", "Coffee & Tea", "specialty coffee", "for a better first cup",
             "whole bean coffee|espresso beans|decaf coffee|matcha|loose leaf tea",
             (("Coffee Beans", 18, "Whole Bean Coffee|Espresso Roast Beans|Decaf Coffee Beans",
               "weight:250 g,500 g,1 kg;roast:Light,Medium,Dark"),
              ("Tea", 12, "Loose Leaf Green Tea|Earl Grey Tea|Ceremonial Matcha",
               "weight:50 g,100 g,250 g"))),
            ("snacks", "Snacks", "snacks", "for the desk drawer and the trailhead",
             "protein bars|dark chocolate|trail mix|kettle chips|roasted almonds",
             (("Bars", 15, "Protein Bar 12-Pack|Granola Bar Box",
               "flavor:Peanut Butter,Chocolate Chip,Salted Caramel"),
              ("Chocolate", 8, "Dark Chocolate Bar|Chocolate Truffles",
               "cocoa:70%,85%,Milk"),
              ("Nuts & Chips", 7, "Trail Mix|Kettle Chips|Roasted Almonds",
               "size:150 g,300 g,1 kg"))),
            ("pantry", "Pantry Staples", "pantry staples", "for a well-stocked kitchen",
             "olive oil|bronze cut pasta|basmati rice|smoked paprika|balsamic vinegar",
             (("Oils & Vinegars", 16, "Extra Virgin Olive Oil|Balsamic Vinegar",
               "size:500 ml,750 ml,1 L"),
              ("Pasta & Grains", 6, "Bronze-Cut Pasta|Basmati Rice|Quinoa",
               "size:500 g,1 kg,5 kg"),
              ("Spices", 8, "Smoked Paprika|Spice Gift Set|Sea Salt Flakes",
               "size:50 g,100 g,250 g"))),
            ("plant-based", "Plant-Based", "plant-based food", "for plant-forward eating",
             "oat milk|vegan protein powder|cashew yogurt|pea protein",
             (("Dairy Alternatives", 4, "Oat Milk 6-Pack|Almond Milk|Cashew Yogurt",
               "flavor:Original,Barista,Unsweetened"),
              ("Protein", 35, "Vegan Protein Powder|Pea Protein Isolate",
               "flavor:Vanilla,Chocolate,Unflavoured;size:500 g,1 kg"))),
        ),
    ),
    (
        "Pets", "pets", "named",
        "Pawford|Whisker & Co|Barkley Bros|Tailwind Pet|Furrow|Snoutly|Featherfield|"
        "Bluefin Aquatics",
        "Comfort|Active|Classic|Vital|Cozy|Pro|Everyday|Outdoor",
        "size:S,M,L",
        "Vet recommended.|Machine-washable cover.|Made without fillers.",
        (
            ("dogs", "Dogs", "dog", "for happy, healthy dogs",
             "dog bed|dog harness|grain free dog food|chew toys|retractable leash",
             (("Food", 55, "Grain-Free Dog Food|Puppy Food|Senior Dog Food",
               "weight:2 kg,6 kg,12 kg;flavor:Chicken,Salmon,Lamb"),
              ("Beds", 70, "Orthopedic Dog Bed|Donut Dog Bed|Crate Mat",
               "size:S,M,L,XL;color:Grey,Tan,Navy"),
              ("Walking", 30, "No-Pull Dog Harness|Retractable Leash|Reflective Collar",
               "size:S,M,L;color:Red,Blue,Black"))),
            ("cats", "Cats", "cat", "for curious, contented cats",
             "cat tree|cat litter|cat toys|wet cat food|scratching post",
             (("Furniture", 90, "Cat Tree=120|Scratching Post=40|Window Perch=40",
               "color:Grey,Beige,White"),
              ("Litter", 25, "Clumping Cat Litter=20|Self-Cleaning Litter Box=350|Litter Mat=20",
               "size:5 kg,10 kg"),
              ("Food", 30, "Wet Cat Food 24-Pack|Dry Cat Food",
               "flavor:Tuna,Chicken,Salmon"))),
            ("aquariums", "Aquariums", "aquarium", "for clear water and thriving fish",
             "aquarium filter|fish tank|aquarium heater|aquarium plants|nano tank",
             (("Tanks", 150, "Aquarium Kit|Nano Tank|Rimless Aquarium",
               "capacity:20 L,60 L,120 L"),
              ("Equipment", 45, "Canister Filter=120|Aquarium Heater=30|LED Aquarium Light=60",
               "capacity:20 L,60 L,120 L"))),
            ("birds", "Birds", "pet birds", "for chatty, active birds",
             "bird cage|bird seed|parrot toys|natural wood perch",
             (("Cages", 110, "Bird Cage|Flight Cage", "size:S,M,L"),
              ("Food & Toys", 15, "Bird Seed Mix|Parrot Toy Set|Natural Wood Perch",
               "size:S,M,L"))),
        ),
    ),
)

_ADJECTIVES = ("Dependable", "Versatile", "Well-made", "Thoughtfully designed", "Popular",
               "Great-value", "Customer-favourite", "Premium")
_BOOK_ADJ = ("Silent", "Hollow", "Crimson", "Last", "Winter", "Hidden", "Glass", "Midnight",
             "Lost", "Golden", "Quiet", "Iron", "Salt", "Paper", "Sleeping", "Burning")
_BOOK_NOUN = ("Harbor", "Lantern", "Orchard", "Garden", "Key", "River", "Crown", "Tide",
              "Archive", "Kitchen", "Table", "Forest", "Station", "Island", "House", "Sky")
_QUERY_PREFIX = ("best", "cheap", "new")
_QUERY_SUFFIX = ("sale", "for women", "for men", "gift", "deal", "reviews")
_REVIEW_TEXT = {
    1: ("Broke after a week. Returning it.", "Not as described, very disappointed.",
        "Poor quality {noun}. Would not recommend."),
    2: ("Disappointed, the quality isn't great.", "Expected more for the price.",
        "The {noun} works but feels cheap."),
    3: ("It's okay. Does the job.", "Average {noun}, nothing special.",
        "Decent, but delivery took a while."),
    4: ("Very good {noun}, minor quibbles.", "Solid quality, happy with it.",
        "Works well, would buy again."),
    5: ("Love it! Best {noun} I've owned.", "Excellent quality, exactly as described.",
        "Five stars, would buy again.", "Perfect {noun}, highly recommend."),
}
_RATING_P = np.array([0.04, 0.06, 0.12, 0.30, 0.48])
# Share of sessions by UTC hour of day (quiet nights, evening peak).
_DIURNAL = np.array([2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 7, 6, 6, 6, 6, 7, 8, 10, 11, 10, 7, 4],
                    dtype=float)
_DIURNAL /= _DIURNAL.sum()

# Behaviour constants.
_NOISE_SHARE = 0.10  # views on random/popular items regardless of interests
_OTHER_SHARE = 0.15  # views on another current interest than the session's focus
_P_CLICK_INTEREST = 0.33
_P_CLICK_NOISE = 0.12
_P_CART_GIVEN_CLICK = 0.27
_P_BUY_GIVEN_CART = 0.40
_P_FAVORITE = 0.03
_P_REVIEW_GIVEN_BUY = 0.20
_P_SEARCH_SESSION = 0.35
_P_DISLIKE_SESSION = 0.05
_P_EVENT_ID = 0.03
_EVENTS_PER_VIEW = 1.48  # calibrated: total events / views for a human user
_ACTIVITY_SIGMA = 0.8
_BLOCK_USERS = 500

_MS_DAY = 86_400_000
_MS_HOUR = 3_600_000

_TYPE_NAMES: tuple[str, ...] = tuple(t.value for t in EventType)
_T = {name: i for i, name in enumerate(_TYPE_NAMES)}
_VIEW, _CLICK, _SEARCH, _CART = _T["view"], _T["click"], _T["search"], _T["cart"]
_PURCHASE, _REVIEW, _FAVORITE, _DISLIKE = _T["purchase"], _T["review"], _T["favorite"], _T[
    "dislike"]


def interest_taxonomy() -> list[Interest]:
    """The interests the shop knows: its level-2 categories, in catalogue order."""
    out: list[Interest] = []
    for dept, dslug, _s, _b, _m, _a, _c, interests in _TREE:
        for islug, iname, tag, _use, phrases, leaves in interests:
            nouns = [n.partition("=")[0].lower() for leaf in leaves for n in leaf[2].split("|")]
            phr = list(dict.fromkeys(phrases.split("|") + nouns))
            out.append(Interest(f"{dslug}/{islug}", tag, f"{dept} > {iname}", tuple(phr)))
    return out


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _parse_start(start: str) -> int:
    """ISO 8601 string → epoch milliseconds UTC (naive strings are taken as UTC)."""
    dt = datetime.fromisoformat(start.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000))


def _iso_ms(ms: np.ndarray) -> np.ndarray:
    """Epoch ms → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` strings (object array)."""
    arr = np.asarray(ms, dtype=np.int64).astype("datetime64[ms]")
    return np.datetime_as_string(arr, unit="ms", timezone="UTC").astype(object)


def _iso_one(ms: int) -> str:
    return str(_iso_ms(np.array([ms]))[0])


def _parse_attrs(spec: str) -> list[tuple[str, list[str]]]:
    out = []
    for part in spec.split(";"):
        key, _, values = part.partition(":")
        out.append((key.strip(), [v.strip() for v in values.split(",")]))
    return out


def _parse_nouns(spec: str, price: float) -> list[tuple[str, float]]:
    """``"Crash Pad=250|Chalk Bag=20"`` → nouns with their median price (default ``price``)."""
    out = []
    for part in spec.split("|"):
        noun, _, own = part.partition("=")
        out.append((noun.strip(), float(own) if own else price))
    return out


def _lower_noun(noun: str) -> str:
    """Lower-case a product noun for running text, keeping acronyms and codes."""
    words = []
    for w in noun.split(" "):
        keep = any(c.isdigit() for c in w) or (len(w) > 1 and w.isupper())
        words.append(w if keep else w.lower())
    return " ".join(words)


def _article(word: str) -> str:
    return "An" if word[:1].lower() in "aeiou" else "A"


def _inverse_cdf(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw: ``cdf`` is (n, k) with last column 1, ``u`` is (n,)."""
    k = cdf.shape[1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), k - 1)


def _user_rng(seed: int, user: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, user)))


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------


@dataclass
class _Catalogue:
    """In-memory catalogue plus the sampling tables the user simulation needs."""

    interests: list[Interest]
    dept_of: np.ndarray  # per interest
    ids: np.ndarray  # object array of item ids, plus "" at the end (index -1)
    price: np.ndarray
    created: np.ndarray  # epoch ms
    interest_of: np.ndarray  # per item
    noun: list[str]  # per item, lower-cased for running text
    brand_lc: list[list[str]]  # per interest: brands, lower-cased, for queries
    phrases: list[tuple[str, ...]]  # per interest
    items_of: list[np.ndarray]  # per interest: item indices
    cdf_of: list[np.ndarray]
    old_items_of: list[np.ndarray]
    old_cdf_of: list[np.ndarray]
    top_of: np.ndarray  # per interest: most popular item (always created before start)
    available: np.ndarray  # interests with at least one item
    available_p: np.ndarray  # popularity of available interests
    global_cdf: np.ndarray
    old_items: np.ndarray
    old_cdf: np.ndarray
    frame: pd.DataFrame = field(repr=False)

    def pick(self, interest: int, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Zipf-popular items of ``interest`` that exist at times ``t``."""
        items = self.items_of[interest]
        out = items[np.minimum(np.searchsorted(self.cdf_of[interest], rng.random(len(t)),
                                               side="right"), len(items) - 1)]
        bad = self.created[out] > t
        if bad.any():
            old = self.old_items_of[interest]
            idx = np.searchsorted(self.old_cdf_of[interest], rng.random(int(bad.sum())),
                                  side="right")
            out[bad] = old[np.minimum(idx, len(old) - 1)]
        return out

    def pick_global(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Popular items from the whole catalogue that exist at times ``t``."""
        n = len(self.price)
        out = np.minimum(np.searchsorted(self.global_cdf, rng.random(len(t)), side="right"),
                         n - 1)
        bad = self.created[out] > t
        if bad.any():
            idx = np.searchsorted(self.old_cdf, rng.random(int(bad.sum())), side="right")
            out[bad] = self.old_items[np.minimum(idx, len(self.old_items) - 1)]
        return out


def _build_catalogue(cfg: ShopConfig, start_ms: int, end_ms: int) -> _Catalogue:
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(0,)))
    interests = interest_taxonomy()
    leaves: list[tuple[int, int, str, list[tuple[str, float]], list[tuple[str, list[str]]]]] = []
    dept_of: list[int] = []
    uses: list[str] = []
    brand_lc: list[list[str]] = []
    dept_rows = []
    ii = 0
    for d, (_dept, _ds, style, brands, models, dattrs, closers, ints) in enumerate(_TREE):
        dept_rows.append((style, brands.split("|"), models.split("|") if models else [],
                          closers.split("|")))
        for _islug, _iname, _tag, _use, _phr, lvs in ints:
            dept_of.append(d)
            uses.append(_use)
            brand_lc.append([b.lower() for b in brands.split("|")])
            for leaf_name, price, nouns, attrs in lvs:
                leaves.append((d, ii, leaf_name, _parse_nouns(nouns, float(price)),
                               _parse_attrs(attrs or dattrs)))
            ii += 1
    n_int = len(interests)
    n = cfg.items

    # Leaf per item: one per interest first, then one per remaining leaf, then weighted.
    first_of = {}
    for li, lf in enumerate(leaves):
        first_of.setdefault(lf[1], li)
    order = list(first_of.values()) + [li for li in range(len(leaves))
                                       if li not in set(first_of.values())]
    leaf_w = rng.gamma(3.0, 1.0, len(leaves))
    leaf_w /= leaf_w.sum()
    base = np.array(order[: min(n, len(order))], dtype=np.int64)
    extra = rng.choice(len(leaves), size=max(0, n - len(base)), p=leaf_w)
    leaf_of = rng.permutation(np.concatenate([base, extra]))
    interest_of = np.array([leaves[li][1] for li in leaf_of], dtype=np.int32)

    # Popularity: Zipf within each interest by a random rank.
    pop_w = np.zeros(n)
    rank0 = np.zeros(n, dtype=bool)
    for i in range(n_int):
        idx = np.flatnonzero(interest_of == i)
        if len(idx) == 0:
            continue
        ranks = rng.permutation(len(idx))
        pop_w[idx] = 1.0 / (ranks + 1.0) ** 1.05
        rank0[idx[ranks == 0]] = True

    # Creation time: ~90% in the two years before start, the rest during the period.
    is_new = (rng.random(n) < 0.10) & ~rank0
    span = end_ms - start_ms
    created = np.where(
        is_new,
        start_ms + (rng.random(n) * 0.9 * span).astype(np.int64),
        start_ms - _MS_DAY - (rng.random(n) * 729 * _MS_DAY).astype(np.int64),
    )
    created = (created // 1000) * 1000

    # Texts, price, attributes.
    u = rng.random((n, 10))
    price_z = rng.normal(0.0, 0.35, n)
    titles: list[str] = []
    brands_out: list[str] = []
    descs: list[str] = []
    attrs_out: list[str] = []
    cats: list[str] = []
    nouns_out: list[str] = []
    prices = np.empty(n)

    def pick(seq: list[str] | tuple[str, ...], x: float) -> str:
        return seq[min(int(x * len(seq)), len(seq) - 1)]

    for j in range(n):
        d, i, leaf_name, nouns, attrs = leaves[leaf_of[j]]
        style, brands, models, closers = dept_rows[d]
        interest = interests[i]
        use = uses[i]
        uj = u[j]
        brand = pick(brands, uj[0])
        noun, med = nouns[min(int(uj[1] * len(nouns)), len(nouns) - 1)]
        xs = rng.random(len(attrs))
        attr = {k: pick(vals, x) for (k, vals), x in zip(attrs, xs, strict=True)}
        feature = next(iter(attr.values()))
        noun_lc = _lower_noun(noun)
        adj = pick(_ADJECTIVES, uj[4])
        if style == "book":
            name = f"The {pick(_BOOK_ADJ, uj[2])} {pick(_BOOK_NOUN, uj[3])}"
            title = f"{name}: {_article(noun)} {noun}, {feature}"
            desc = f"{_article(noun_lc)} {noun_lc} from {brand}, {use}."
        else:
            model = pick(models, uj[2])
            if style == "numbered":
                model = f"{model} {1 + int(uj[3] * 9)}"
            title = f"{brand} {model} {noun}, {feature}"
            desc = f"{adj} {noun_lc} from {brand}, made {use}."
        if uj[5] < 0.6:
            desc += " " + pick(closers, uj[6])
        p = med * math.exp(price_z[j])
        p = math.ceil(p) - 0.01 if p >= 20 else max(0.99, math.ceil(p * 2) / 2 - 0.01)
        prices[j] = round(p, 2)
        titles.append(title)
        brands_out.append(brand)
        descs.append(desc)
        attrs_out.append(json.dumps(attr, ensure_ascii=False))
        cats.append(f"{interest.category} > {leaf_name}")
        nouns_out.append(noun_lc)

    width = max(6, len(str(n)))
    ids = np.array([f"I{k + 1:0{width}d}" for k in range(n)] + [""], dtype=object)
    frame = pd.DataFrame({
        "item_id": ids[:n],
        "title": titles,
        "category": cats,
        "brand": brands_out,
        "price": [f"{p:.2f}" for p in prices],
        "description": descs,
        "attributes": attrs_out,
        "created_at": np.datetime_as_string(created.astype("datetime64[ms]"), unit="s",
                                            timezone="UTC").astype(object),
    }, columns=list(ITEM_COLUMNS))

    items_of, cdf_of, old_items_of, old_cdf_of = [], [], [], []
    top_of = np.full(n_int, -1, dtype=np.int64)
    for i in range(n_int):
        idx = np.flatnonzero(interest_of == i)
        items_of.append(idx)
        w = pop_w[idx]
        cdf_of.append(np.cumsum(w) / w.sum() if len(idx) else np.zeros(0))
        old = idx[~is_new[idx]]
        ow = pop_w[old]
        old_items_of.append(old)
        old_cdf_of.append(np.cumsum(ow) / ow.sum() if len(old) else np.zeros(0))
        if len(idx):
            top_of[i] = idx[np.argmax(w)]
    available = np.flatnonzero(top_of >= 0)
    ipop = rng.gamma(2.0, 1.0, n_int)[available]
    old_all = np.flatnonzero(~is_new)
    return _Catalogue(
        interests=interests,
        dept_of=np.array(dept_of),
        ids=ids,
        price=prices,
        created=created,
        interest_of=interest_of,
        noun=nouns_out,
        brand_lc=brand_lc,
        phrases=[it.phrases for it in interests],
        items_of=items_of,
        cdf_of=cdf_of,
        old_items_of=old_items_of,
        old_cdf_of=old_cdf_of,
        top_of=top_of,
        available=available,
        available_p=ipop / ipop.sum(),
        global_cdf=np.cumsum(pop_w) / pop_w.sum(),
        old_items=old_all,
        old_cdf=np.cumsum(pop_w[old_all]) / pop_w[old_all].sum(),
        frame=frame,
    )


# --------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------


@dataclass
class _Params:
    start_ms: int
    end_ms: int
    cfg: ShopConfig


@dataclass
class _UserOut:
    """One user's events (time-ordered) and ground truth."""

    ts: np.ndarray
    typ: np.ndarray
    item: np.ndarray
    dwell: np.ndarray
    query: np.ndarray
    qty: np.ndarray
    amount: np.ndarray
    rating: np.ndarray
    text: np.ndarray
    kind: np.ndarray  # malformed kind index, -1 for a well-formed row
    given_id: np.ndarray
    truth: list[tuple[Any, ...]]
    shifts: list[tuple[Any, ...]]


def _empty_events(n: int = 0) -> dict[str, np.ndarray]:
    return {
        "ts": np.zeros(n, np.int64),
        "typ": np.zeros(n, np.int8),
        "item": np.full(n, -1, np.int64),
        "dwell": np.full(n, np.nan),
        "query": np.full(n, None, dtype=object),
        "qty": np.zeros(n, np.int64),
        "amount": np.full(n, np.nan),
        "rating": np.zeros(n, np.int64),
        "text": np.full(n, None, dtype=object),
    }


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _finish(ev: dict[str, np.ndarray], rng: np.random.Generator, p: _Params,
            truth: list[tuple[Any, ...]], shifts: list[tuple[int, int, int]],
            uid: str, cat: _Catalogue) -> _UserOut:
    """Sort by time, drop events after the end, corrupt some rows, compute shift indices."""
    keep = (ev["ts"] < p.end_ms) & (ev["ts"] >= p.start_ms)
    order = np.flatnonzero(keep)
    order = order[np.argsort(ev["ts"][order], kind="stable")]
    ev = {k: v[order] for k, v in ev.items()}
    n = len(ev["ts"])
    kind = np.full(n, -1, np.int8)
    bad = rng.random(n) < p.cfg.malformed_share
    nb = int(bad.sum())
    if nb:
        kind[bad] = rng.integers(0, len(MALFORMED_KINDS), nb)
        neg = kind == MALFORMED_KINDS.index("negative_dwell")
        ev["dwell"][neg] = -np.round(rng.uniform(1.0, 120.0, int(neg.sum())), 1)
    given = rng.random(n) < _P_EVENT_ID
    wf_ts = ev["ts"][kind < 0]
    shift_rows = []
    for t, left, arrived in shifts:
        idx = int(np.searchsorted(wf_ts, t, side="left"))
        shift_rows.append((uid, _iso_one(t), cat.interests[left].key,
                           cat.interests[arrived].key, idx if idx < len(wf_ts) else ""))
    return _UserOut(kind=kind, given_id=given, truth=truth, shifts=shift_rows, **ev)


def _simulate_bot(u: int, rng: np.random.Generator, cat: _Catalogue, p: _Params) -> _UserOut:
    """A scraper: bursts of 150-450 views inside one minute, crawling the catalogue."""
    parts = []
    span = p.end_ms - p.start_ms
    for _ in range(int(rng.integers(3, 8))):
        k = int(rng.integers(150, 451))
        t0 = p.start_ms + int(rng.random() * max(span - 120_000, 1))
        dur = rng.uniform(20.0, 55.0)
        ts = t0 + np.sort((rng.random(k) * dur * 1000).astype(np.int64))
        old = cat.old_items
        start = int(rng.integers(len(old)))
        ev = _empty_events(k)
        ev["ts"] = ts
        ev["typ"][:] = _VIEW
        ev["item"] = old[(start + np.arange(k)) % len(old)]
        ev["dwell"] = np.round(rng.uniform(0.1, 0.9, k), 1)
        parts.append(ev)
    return _finish(_concat(parts), rng, p, [], [], _uid(u), cat)


def _uid(u: int) -> str:
    return f"U{u + 1:06d}"


def _simulate_human(u: int, rng: np.random.Generator, cat: _Catalogue, p: _Params) -> _UserOut:
    cfg = p.cfg
    start, end = p.start_ms, p.end_ms
    span = end - start
    uid = _uid(u)
    join = start if rng.random() < 0.75 else start + int(rng.uniform(0.0, 0.8) * span)
    avail = cat.available
    lo, hi = cfg.interests_per_user
    k = max(1, min(int(rng.integers(lo, hi + 1)), len(avail)))
    held = [int(x) for x in rng.choice(avail, size=k, replace=False, p=cat.available_p)]
    used = set(held)

    # Spans: [interest, start, end, base weight, latent].
    bases = rng.gamma(2.0, 1.0, k)
    bases /= bases.sum()
    spans: list[list[Any]] = [[i, join, end, float(b), 0] for i, b in zip(held, bases,
                                                                          strict=True)]
    for _ in range(cfg.latent_interests):
        cands = [int(i) for i in avail if int(i) not in used]
        if not cands:
            break
        if rng.random() < 0.6:
            depts = {int(cat.dept_of[i]) for i in held}
            same = [i for i in cands if int(cat.dept_of[i]) in depts]
            cands = same or cands
        li = cands[int(rng.integers(len(cands)))]
        used.add(li)
        spans.append([li, join, end, float(rng.uniform(0.15, 0.5)), 1])

    shifts: list[tuple[int, int, int]] = []
    if rng.random() < cfg.shift_probability:
        n_shifts = 1 + int(rng.random() < 0.3)
        t = join + int((0.25 + 0.45 * rng.random()) * (end - join))
        last_arrived = -1
        for _ in range(n_shifts):
            cands = np.array([int(i) for i in avail if int(i) not in used])
            open_ = [j for j, s in enumerate(spans) if not s[4] and s[2] == end
                     and j != last_arrived]
            if len(cands) == 0 or not open_:
                break
            left_j = open_[int(rng.integers(len(open_)))]
            w = cat.available_p[np.searchsorted(avail, cands)]
            arrived = int(cands[_inverse_cdf((np.cumsum(w) / w.sum())[None, :],
                                             rng.random(1))[0]])
            top = max(s[3] for s in spans if not s[4] and s[2] == end)
            spans[left_j][2] = t
            spans.append([arrived, t, end, float(top * rng.uniform(1.2, 1.6)), 0])
            last_arrived = len(spans) - 1
            used.add(arrived)
            shifts.append((t, spans[left_j][0], arrived))
            t = t + int((0.3 + 0.5 * rng.random()) * (end - t))

    truth = []
    for i, s0, s1, w, lat in spans:
        it = cat.interests[i]
        truth.append((uid, it.key, it.tag, it.category, _iso_one(s0),
                      "" if s1 == end else _iso_one(s1), f"{w:.3f}", lat))

    # Activity and sessions.
    activity = cfg.events_per_user * math.exp(
        rng.normal(-_ACTIVITY_SIGMA**2 / 2, _ACTIVITY_SIGMA))
    views_target = activity / _EVENTS_PER_VIEW
    if views_target < 0.5:
        return _finish(_empty_events(), rng, p, truth, shifts, uid, cat)
    per_session = rng.uniform(3.5, 9.0)
    s_target = max(1.0, views_target / per_session)
    horizon = end - _MS_HOUR
    gaps = rng.exponential((end - join) / s_target, int(s_target * 1.5) + 8)
    st = join + np.cumsum(gaps).astype(np.int64)
    st = st[st < horizon]
    if len(st) == 0:
        st = np.array([join + int(rng.random() * max(horizon - join, 1))])
    day = (st // _MS_DAY) * _MS_DAY
    moved = day + rng.choice(24, size=len(st), p=_DIURNAL) * _MS_HOUR + (
        rng.random(len(st)) * _MS_HOUR).astype(np.int64)
    st = np.sort(np.where((moved >= join) & (moved < horizon), moved, st))
    S = len(st)
    nv = rng.geometric(min(1.0, S / views_target), S)
    V = int(nv.sum())
    off = np.cumsum(nv) - nv
    sess = np.repeat(np.arange(S), nv)

    # Interest weights at session times: base × smooth drift, zero outside the span.
    shown = [s for s in spans if not s[4]]
    s_int = np.array([s[0] for s in shown])
    s0 = np.array([s[1] for s in shown], dtype=np.int64)
    s1 = np.array([s[2] for s in shown], dtype=np.int64)
    base = np.array([s[3] for s in shown])
    m = len(shown)
    amp = rng.uniform(0.2, 0.6, m)
    period = rng.uniform(15.0, 60.0, m) * _MS_DAY
    phase = rng.uniform(0.0, 2 * math.pi, m)
    tt = st[:, None]
    w = base * (1 + amp * np.sin(2 * math.pi * (tt - start) / period + phase))
    w = w * ((tt >= s0) & (tt < s1))
    w[w.sum(axis=1) <= 0] = base  # cannot happen: spans cover [join, end)
    cdf = np.cumsum(w, axis=1)
    cdf /= cdf[:, -1:]
    main = _inverse_cdf(cdf, rng.random(S))

    # Which span each view serves: session focus, another interest, noise (-1), dislike (-2).
    sp = main[sess].copy()
    uu = rng.random(V)
    other = (uu >= _NOISE_SHARE) & (uu < _NOISE_SHARE + _OTHER_SHARE)
    if other.any():
        sp[other] = _inverse_cdf(cdf[sess[other]], rng.random(int(other.sum())))
    sp[uu < _NOISE_SHARE] = -1
    dis_s = np.flatnonzero(rng.random(S) < _P_DISLIKE_SESSION)
    out_cands = np.array([int(i) for i in avail if int(i) not in used])
    if len(dis_s) and len(out_cands):
        sp[off[dis_s] + (rng.random(len(dis_s)) * nv[dis_s]).astype(np.int64)] = -2
    searched = rng.random(S) < _P_SEARCH_SESSION

    # Times: lead-in, then dwell + browsing gap between consecutive views.
    dwell = np.clip(np.exp(rng.normal(math.log(25.0), 0.9, V)), 1.0, 1800.0)
    dwell[sp == -1] *= 0.5
    is_dis = sp == -2
    dwell[is_dis] = rng.uniform(2.0, 10.0, int(is_dis.sum()))
    dwell = np.maximum(np.round(dwell, 1), 0.5)
    gap = np.clip(np.exp(rng.normal(math.log(8.0), 0.8, V)), 0.5, 600.0)
    lead = np.where(searched, np.exp(rng.normal(math.log(6.0), 0.5, S)),
                    np.exp(rng.normal(math.log(1.5), 0.5, S)))
    step = dwell + gap
    excl = np.cumsum(step) - step
    excl -= excl[off][sess]
    view_ms = st[sess] + np.round((lead[sess] + excl) * 1000).astype(np.int64)

    # Items.
    item = np.empty(V, dtype=np.int64)
    in_int = sp >= 0
    if in_int.any():
        vi = s_int[np.maximum(sp, 0)]
        for i in np.unique(vi[in_int]):
            mask = in_int & (vi == i)
            item[mask] = cat.pick(int(i), view_ms[mask], rng)
    noise = sp == -1
    if noise.any():
        idx = np.flatnonzero(noise)
        latent = np.array([s[0] for s in spans if s[4]], dtype=np.int64)
        got = cat.pick_global(view_ms[idx], rng)
        for _ in range(3):
            clash = np.isin(cat.interest_of[got], latent)
            if not clash.any():
                break
            got[clash] = cat.pick_global(view_ms[idx][clash], rng)
        clash = np.isin(cat.interest_of[got], latent)
        got[clash] = cat.top_of[held[0]]
        item[idx] = got
    if is_dis.any():
        idx = np.flatnonzero(is_dis)
        which = out_cands[rng.integers(0, len(out_cands), len(idx))]
        for i in np.unique(which):
            sel = idx[which == i]
            item[sel] = cat.pick(int(i), view_ms[sel], rng)

    # Funnel.
    p_click = np.where(in_int, _P_CLICK_INTEREST, np.where(noise, _P_CLICK_NOISE, 0.0))
    click = rng.random(V) < p_click
    cart = click & (rng.random(V) < _P_CART_GIVEN_CLICK)
    buy = cart & (rng.random(V) < _P_BUY_GIVEN_CART)
    fav = in_int & (rng.random(V) < _P_FAVORITE)
    click_ms = view_ms + np.round(dwell * rng.uniform(0.2, 0.8, V) * 1000).astype(np.int64)
    cart_ms = click_ms + np.round(np.exp(rng.normal(math.log(6.0), 0.6, V)) * 1000).astype(
        np.int64)
    sess_end = np.maximum.reduceat(view_ms + np.round(dwell * 1000).astype(np.int64), off)
    checkout = sess_end + np.round(np.exp(rng.normal(math.log(75.0), 0.5, S)) * 1000).astype(
        np.int64)
    fav_ms = view_ms + np.round(dwell * rng.uniform(0.5, 1.0, V) * 1000).astype(np.int64)
    dis_ms = view_ms + np.round(dwell * rng.uniform(0.5, 0.95, V) * 1000).astype(np.int64)

    parts = []
    ev = _empty_events(V)
    ev["ts"], ev["typ"][:], ev["item"], ev["dwell"] = view_ms, _VIEW, item, dwell
    parts.append(ev)
    ns = int(searched.sum())
    if ns:
        ev = _empty_events(ns)
        ev["ts"], ev["typ"][:] = st[searched], _SEARCH
        focus = s_int[main[searched]]
        rq = rng.random((ns, 5))
        queries = []
        for j in range(ns):
            i = int(focus[j])
            phr = cat.phrases[i]
            q = phr[int(rq[j, 0] * len(phr))]
            if rq[j, 1] < 0.12:
                brands = cat.brand_lc[i]
                q = f"{brands[int(rq[j, 2] * len(brands))]} {q}"
            elif rq[j, 1] < 0.20:
                q = f"{_QUERY_PREFIX[int(rq[j, 2] * len(_QUERY_PREFIX))]} {q}"
            elif rq[j, 1] < 0.28:
                q = f"{q} {_QUERY_SUFFIX[int(rq[j, 2] * len(_QUERY_SUFFIX))]}"
            if rq[j, 3] < 0.04 and len(q) > 4:  # a typo: two letters swapped
                c = 1 + int(rq[j, 4] * (len(q) - 3))
                q = q[:c] + q[c + 1] + q[c] + q[c + 2:]
            queries.append(q)
        ev["query"] = np.array(queries, dtype=object)
        parts.append(ev)
    for mask, times, code in ((click, click_ms, _CLICK), (fav, fav_ms, _FAVORITE),
                              (is_dis, dis_ms, _DISLIKE), (cart, cart_ms, _CART)):
        c = int(mask.sum())
        if c:
            ev = _empty_events(c)
            ev["ts"], ev["typ"][:], ev["item"] = times[mask], code, item[mask]
            parts.append(ev)
    nbuy = int(buy.sum())
    if nbuy:
        b_item = item[buy]
        b_ms = np.maximum(checkout[sess[buy]], cart_ms[buy] + 2000)
        qty = rng.choice(np.array([1, 2, 3]), size=nbuy, p=[0.78, 0.16, 0.06])
        ev = _empty_events(nbuy)
        ev["ts"], ev["typ"][:], ev["item"], ev["qty"] = b_ms, _PURCHASE, b_item, qty
        ev["amount"] = np.round(cat.price[b_item] * qty, 2)
        parts.append(ev)
        rev = rng.random(nbuy) < _P_REVIEW_GIVEN_BUY
        nr = int(rev.sum())
        if nr:
            ev = _empty_events(nr)
            delay = (1.0 + rng.exponential(6.0, nr)) * _MS_DAY
            ev["ts"] = b_ms[rev] + delay.astype(np.int64)
            ev["typ"][:], ev["item"] = _REVIEW, b_item[rev]
            ratings = rng.choice(np.arange(1, 6), size=nr, p=_RATING_P)
            picks = rng.random(nr)
            texts = []
            for r, it, x in zip(ratings, ev["item"], picks, strict=True):
                opts = _REVIEW_TEXT[int(r)]
                texts.append(opts[int(x * len(opts))].format(noun=cat.noun[int(it)]))
            ev["rating"], ev["text"] = ratings, np.array(texts, dtype=object)
            parts.append(ev)
    return _finish(_concat(parts), rng, p, truth, shifts, uid, cat)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _events_frame(block: list[tuple[int, _UserOut]], cat: _Catalogue, first_row: int,
                  counts: dict[str, Any]) -> pd.DataFrame:
    outs = [o for _, o in block]
    n_of = np.array([len(o.ts) for o in outs])
    uids = np.repeat(np.array([_uid(u) for u, _ in block], dtype=object), n_of)
    cols = {f: np.concatenate([getattr(o, f) for o in outs]) for f in (
        "ts", "typ", "item", "dwell", "query", "qty", "amount", "rating", "text", "kind",
        "given_id")}
    n = len(uids)
    ts = _iso_ms(cols["ts"])
    typ = np.array(_TYPE_NAMES, dtype=object)[cols["typ"]]
    kind = cols["kind"]
    for k, name in enumerate(MALFORMED_KINDS):
        sel = np.flatnonzero(kind == k)
        counts["malformed"][name] += len(sel)
        if name == "bad_timestamp":
            ts[sel] = "not-a-date"
        elif name == "future_timestamp":
            ts[sel] = ["2199" + s[4:] for s in ts[sel]]
        elif name == "unknown_type":
            typ[sel] = "teleport"
        elif name == "missing_user":
            uids = uids.copy()
            uids[sel] = ""
    wf = kind < 0
    counts["by_type"] += np.bincount(cols["typ"][wf], minlength=len(_TYPE_NAMES))
    event_id = np.full(n, None, dtype=object)
    gid = np.flatnonzero(cols["given_id"])
    event_id[gid] = [f"E{first_row + r:010d}" for r in gid]
    counts["event_ids_given"] += len(gid)
    amount = np.full(n, None, dtype=object)
    has_amt = np.flatnonzero(~np.isnan(cols["amount"]))
    amount[has_amt] = [f"{a:.2f}" for a in cols["amount"][has_amt]]
    empty = np.full(n, None, dtype=object)
    frame = pd.DataFrame({
        "event_id": event_id,
        "user_id": uids,
        "item_id": cat.ids[cols["item"]],
        "type": typ,
        "timestamp": ts,
        "dwell_seconds": cols["dwell"],
        "query": cols["query"],
        "quantity": pd.arrays.IntegerArray(cols["qty"], cols["qty"] <= 0),
        "amount": amount,
        "rating": pd.arrays.IntegerArray(cols["rating"], cols["rating"] <= 0),
        "text": cols["text"],
        "request_id": empty,
        "position": empty,
    }, columns=list(EVENT_COLUMNS))
    return frame


def generate(config: ShopConfig, out_dir: Path, progress: bool = True) -> ShopFiles:
    """Simulate the shop described by ``config`` and write its files into ``out_dir``.

    Users are simulated and written in blocks of 500, so memory stays bounded for any number
    of users. With ``progress`` a tqdm bar over users is shown on stderr. Existing files of
    the same names are overwritten. Returns the paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ShopFiles(
        directory=out,
        items=out / "items.csv",
        events=out / "events.csv",
        interests=out / "truth_interests.csv",
        shifts=out / "truth_shifts.csv",
        meta=out / "meta.json",
    )
    start_ms = _parse_start(config.start)
    end_ms = start_ms + config.days * _MS_DAY
    params = _Params(start_ms, end_ms, config)
    cat = _build_catalogue(config, start_ms, end_ms)
    with files.items.open("w", encoding="utf-8", newline="") as fh:
        cat.frame.to_csv(fh, index=False, lineterminator="\n")

    n_bots = int(round(config.users * config.bot_share))
    bot_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2,)))
    bots = np.sort(bot_rng.choice(config.users, size=n_bots, replace=False)) if n_bots else (
        np.zeros(0, dtype=np.int64))
    bot_set = {int(b) for b in bots}

    counts: dict[str, Any] = {
        "malformed": dict.fromkeys(MALFORMED_KINDS, 0),
        "by_type": np.zeros(len(_TYPE_NAMES), dtype=np.int64),
        "event_ids_given": 0,
    }
    rows = 0
    bot_rows = 0
    n_shifts = 0
    users_shifted = 0
    interest_rows = 0
    with (
        files.events.open("w", encoding="utf-8", newline="") as ev_fh,
        files.interests.open("w", encoding="utf-8", newline="") as in_fh,
        files.shifts.open("w", encoding="utf-8", newline="") as sh_fh,
        tqdm(total=config.users, desc="synthetic-shop", unit="user", file=sys.stderr,
             disable=not progress) as bar,
    ):
        in_w = csv.writer(in_fh, lineterminator="\n")
        sh_w = csv.writer(sh_fh, lineterminator="\n")
        ev_fh.write(",".join(EVENT_COLUMNS) + "\n")
        in_w.writerow(TRUTH_INTEREST_COLUMNS)
        sh_w.writerow(TRUTH_SHIFT_COLUMNS)
        for b0 in range(0, config.users, _BLOCK_USERS):
            block: list[tuple[int, _UserOut]] = []
            for u in range(b0, min(b0 + _BLOCK_USERS, config.users)):
                rng = _user_rng(config.seed, u)
                if u in bot_set:
                    res = _simulate_bot(u, rng, cat, params)
                    bot_rows += len(res.ts)
                else:
                    res = _simulate_human(u, rng, cat, params)
                block.append((u, res))
                in_w.writerows(res.truth)
                sh_w.writerows(res.shifts)
                interest_rows += len(res.truth)
                n_shifts += len(res.shifts)
                users_shifted += bool(res.shifts)
                bar.update(1)
            frame = _events_frame(block, cat, rows, counts)
            frame.to_csv(ev_fh, index=False, header=False, lineterminator="\n")
            rows += len(frame)
    malformed = counts["malformed"]
    meta = {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "config": asdict(config),
        "period": {"start": _iso_one(start_ms), "end": _iso_one(end_ms)},
        "event_order": "grouped by user_id ascending; time-ordered within a user",
        "counts": {
            "users": config.users,
            "humans": config.users - n_bots,
            "items": config.items,
            "interests": len(cat.interests),
            "events": rows,
            "well_formed_events": rows - sum(malformed.values()),
            "bot_events": bot_rows,
            "by_type": {name: int(c) for name, c in zip(_TYPE_NAMES, counts["by_type"],
                                                        strict=True)},
            "event_ids_given": counts["event_ids_given"],
            "bots": [_uid(int(b)) for b in bots],
            "malformed": malformed,
            "malformed_total": sum(malformed.values()),
            "shifts": n_shifts,
            "users_with_shift": users_shifted,
            "interest_spans": interest_rows,
        },
    }
    files.meta.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return files
