"""OpenStack Cinder volume driver for the shelf storage appliance.

The driver is ``shelf_cinder.driver.ShelfISCSIDriver``; it is imported by cinder-volume
(``volume_driver = shelf_cinder.driver.ShelfISCSIDriver``), so this package does not
import Cinder itself.
"""

__version__ = "0.1.0"
