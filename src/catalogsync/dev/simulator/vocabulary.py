"""Word lists that make generated products read like an Australian pharmacy catalog.

Kept apart from the generator so the generator reads as logic. Changing any list changes every
generated catalog, so the cache key includes ``FORMAT`` in ``generator.py``: bump it when editing.
"""

from __future__ import annotations

# fmt: off

BRAND_STEMS = (
    "Panamax", "Swisse", "Blackmores", "Nature's Way", "Thermoskin", "Ostelin", "Cenovis",
    "Elevit", "Nurofen", "Voltaren", "Cetaphil", "QV", "Sukin", "Hydralyte", "Difflam",
    "Betadine", "Dettol", "Elastoplast", "Band-Aid", "Bioglan", "Herbs of Gold", "Fusion",
    "Microgenics", "Caruso's", "Oral-B", "Colgate", "Sensodyne", "La Roche-Posay", "Avène",
    "Bepanthen", "Gaviscon", "Telfast", "Claratyne", "Codral", "Demazin", "Strepsils",
    "Rennie", "Imodium", "Movicol", "Metamucil", "Inner Health", "Life-Space", "Ego",
    "Dermaveen", "Eucerin", "Neutrogena", "Curash", "Mylanta", "Zyrtec", "Sudafed",
)
BRAND_SUFFIXES = ("", "", "", " Pharma", " Health", " Naturals", " Clinical", " Kids", " Plus")

ORG_STEMS = (
    "Sigma", "Arrotex", "Apotex", "Mylan", "Sandoz", "Aspen", "Viatris", "Bayer", "Reckitt",
    "Haleon", "Sanofi", "Pfizer", "iNova", "Ego", "H&B", "Blackmores", "Pharmacare", "Clinect",
    "Bio-Organics", "Key Pharmaceuticals", "Care Pharmaceuticals", "Amcal", "Symbion", "API",
)
ORG_SUFFIXES = (
    " Pty Ltd", " Australia Pty Ltd", " Healthcare", " Pharmaceuticals", " Consumer Health", " Ltd",
)
ORG_TYPES = ("supplier", "supplier", "supplier", "marketing", "medical_professional", "other")

CITIES = (
    ("Sydney", "NSW", "2000"), ("Melbourne", "VIC", "3000"), ("Brisbane", "QLD", "4000"),
    ("Perth", "WA", "6000"), ("Adelaide", "SA", "5000"), ("Hobart", "TAS", "7000"),
    ("Canberra", "ACT", "2600"), ("Darwin", "NT", "0800"), ("Macquarie Park", "NSW", "2113"),
    ("Notting Hill", "VIC", "3168"), ("Auckland", None, "1010"),
)
STREETS = ("Lane Cove Rd", "Ferntree Gully Rd", "Pacific Hwy", "Collins St", "George St",
           "Burwood Hwy", "Epping Rd", "Hume Hwy", "Logan Rd", "Stirling Hwy")

INGREDIENTS = (
    ("Paracetamol", ("500 mg", "665 mg", "120 mg/5 mL")),
    ("Ibuprofen", ("200 mg", "400 mg", "100 mg/5 mL")),
    ("Amoxicillin", ("250 mg", "500 mg")),
    ("Cetirizine Hydrochloride", ("10 mg",)),
    ("Loratadine", ("10 mg",)),
    ("Fexofenadine Hydrochloride", ("120 mg", "180 mg")),
    ("Pantoprazole", ("20 mg", "40 mg")),
    ("Esomeprazole", ("20 mg",)),
    ("Atorvastatin", ("10 mg", "20 mg", "40 mg", "80 mg")),
    ("Metformin Hydrochloride", ("500 mg", "850 mg", "1 g")),
    ("Sertraline", ("50 mg", "100 mg")),
    ("Diclofenac Diethylammonium", ("1.16 %", "2.32 %")),
    ("Loperamide Hydrochloride", ("2 mg",)),
    ("Salbutamol", ("100 µg/dose",)),
    ("Fluticasone Propionate", ("50 µg/dose",)),
    ("Chlorhexidine Gluconate", ("0.2 %", "0.5 %")),
    ("Povidone-Iodine", ("10 %",)),
    ("Colecalciferol", ("1000 IU", "25 µg")),
    ("Magnesium", ("350 mg", "500 mg")),
    ("Ascorbic Acid", ("500 mg", "1000 mg")),
)
DOSE_FORMS = ("Tablets", "Film-Coated Tablets", "Capsules", "Soft Capsules", "Oral Liquid",
              "Gel", "Cream", "Nasal Spray", "Inhaler", "Lozenges", "Effervescent Tablets")
PACK_COUNTS = (5, 10, 12, 14, 16, 20, 24, 28, 30, 48, 50, 56, 60, 90, 100, 120, 150, 200)

CONSUMER_LINES = (
    ("Knee Sleeve", ("Small", "Medium", "Large", "XL")),
    ("Moisturising Lotion", ("250 mL", "500 mL", "1 L")),
    ("Gentle Skin Cleanser", ("125 mL", "250 mL", "500 mL")),
    ("Sensitive Toothpaste", ("110 g", "2 x 110 g")),
    ("Electrolyte Drink", ("250 mL", "1 L")),
    ("Fabric Strips", ("40 Pack", "100 Pack")),
    ("Barrier Cream", ("100 g", "250 g")),
    ("Sunscreen SPF 50+", ("50 mL", "110 mL", "200 mL")),
    ("Probiotic Powder", ("60 g", "120 g")),
    ("Nappy Rash Cream", ("50 g", "100 g")),
    ("Multivitamin Gummies", ("60 Pack", "120 Pack")),
    ("Hand Sanitiser", ("50 mL", "375 mL")),
    ("Compression Stockings", ("Class 1 Small", "Class 1 Medium", "Class 2 Large")),
    ("Thermometer", ("Digital", "Infrared")),
)

CATEGORY_NAMES = (
    "Pain Relief", "Cold & Flu", "Allergy & Hayfever", "Digestive Health", "Vitamins",
    "Minerals", "Skin Care", "Sun Care", "Oral Care", "Baby Care", "First Aid", "Supports & Braces",
    "Heart Health", "Women's Health", "Men's Health", "Sleep & Stress", "Eye Care", "Ear Care",
    "Foot Care", "Hair Care", "Sports Nutrition", "Weight Management", "Incontinence",
    "Prescription Medicines", "Respiratory", "Antiseptics", "Wound Care", "Diabetes Care",
)
FAMILY_NAMES = (
    "Analgesics", "Antihistamines", "Proton Pump Inhibitors", "Statins", "Emollients",
    "Electrolytes", "Probiotics", "Orthopaedic Supports", "Sunscreens", "Antiseptics",
    "Cough & Cold", "Laxatives", "Antifungals", "Multivitamins", "Fish Oils",
)
ATTRIBUTE_TYPES = (
    ("gluten_free", "Gluten free"), ("vegan", "Vegan"), ("lactose_free", "Lactose free"),
    ("fragrance_free", "Fragrance free"), ("australian_made", "Australian made"),
    ("dermatologically_tested", "Dermatologically tested"), ("sugar_free", "Sugar free"),
)
GS1_SEGMENTS = (
    ("10000002", "Pharmaceutical Drugs", "Products that are medicines for human use."),
    ("10000456", "Vitamins/Minerals/Nutritional Supplements", "Dietary supplements."),
    ("10000467", "Skin Care Products", "Products applied to the skin."),
    ("10000505", "Oral Care", "Toothpaste, mouthwash and accessories."),
    ("10000559", "Medical Devices", "Devices used for diagnosis or treatment."),
    ("10000682", "First Aid", "Plasters, bandages and dressings."),
)

DESCRIPTION_TYPES = (
    "full_description", "indication", "usage", "composition", "warnings", "properties",
    "side_effects", "contra_indication", "interactions", "faq", "measurements", "legal_text",
    "nutritional_value", "pregnancy_description", "breastfeeding_description", "keywords",
    "usage_extended", "usage_type", "pregnancy_description_extended",
    "breastfeeding_description_extended",
)
TARGET_GROUPS = ("public", "pharmacist", "doctor", "homecare", "hospital", "nurse",
                 "physiotherapist", "webshop")
PHOTO_TYPES = ("packshot", "packshot", "packshot", "productshot", "lifestyle_image", "pillshot")
PHOTO_FORMATS = ("thumbnail", "thumbnailWebp", "medium", "mediumWebp", "large", "largeWebp",
                 "huge", "hugeWebp")
FRONTAL_FORMATS = ("thumbnail", "thumbnailWebp", "medium", "mediumJpeg", "mediumWebp", "largeJpg",
                   "largeWebp", "huge", "hugeWebp")
VISIBLE_SIDES = ("front", "left", "right", "back", "bottom", "top")
LINK_TYPES = ("website", "video", "brochure", "app")

SENTENCES = (
    "Provides fast, effective temporary relief from pain and discomfort.",
    "Always read the label and follow the directions for use.",
    "If symptoms persist, talk to your health professional.",
    "Suitable for adults and children over 12 years.",
    "Do not use if you are allergic to any of the ingredients listed.",
    "Store below 25 °C in a dry place, away from direct sunlight.",
    "Contains no added gluten, lactose, artificial colours or flavours.",
    "This medicine may cause drowsiness and may increase the effects of alcohol.",
    "Each tablet contains the active ingredient equivalent to the stated strength.",
    "Clinically tested and developed with Australian pharmacists.",
    "Helps maintain healthy skin hydration for up to 24 hours.",
    "Vitamin supplements should not replace a balanced diet.",
    "Apply a thin layer to the affected area two to three times daily.",
    "Do not exceed the stated dose; keep out of reach of children.",
    "Consult your doctor before use if pregnant or breastfeeding.",
    "Free from parabens, fragrance and soap — gentle on sensitive skin.",
    "Provides graduated compression to support circulation.",
    "Made in Australia from local and imported ingredients.",
    "Shake well before use and measure with the enclosed dosing cup.",
    "Contains 1.2 µg of vitamin B12 per serve (50 % RDI).",
)
HEADINGS = ("Directions", "Ingredients", "Warnings", "Benefits", "Storage", "Dosage",
            "Features", "Precautions", "Nutrition information", "Key benefits")
# fmt: on
